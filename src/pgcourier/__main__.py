"""``python -m pgcourier`` is the ``pgcourier`` command."""

import sys

from pgcourier.cli import main

sys.exit(main())
