"""The pieces of ``scripts/bench.py``: servers, processes, the two queues and the report.

``scripts/bench.py`` puts ``scripts/`` and ``src/`` on ``sys.path``; the helper processes it
starts (the receiver, the PgQueuer consumer) get the same through ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a helper process: this one's, with scripts/ and src/ importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGCOURIER_")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SCRIPTS), str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env.update(extra)
    return env


def python() -> str:
    return sys.executable
