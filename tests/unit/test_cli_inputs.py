"""The CLI's argument types: bad text is one line and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from pgcourier.cli import inputs

# Deeper than CPython's parser follows (its recursion limit is 1000), shorter than the kernel's
# limit on one argument (128 KiB).
DEEP = '{"a":' * 20_000 + "1" + "}" * 20_000


def test_a_payload_too_deep_to_parse_is_refused_as_an_argument_error() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="nested too deeply"):
        inputs.json_object(DEEP)


def test_a_payload_too_deep_to_parse_is_one_line_and_exit_2() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGCOURIER_")}
    # An unreachable database: the argument is refused before any connection is tried.
    env["PGCOURIER_DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/none"
    proc = subprocess.run(
        [sys.executable, "-m", "pgcourier", "enqueue", "order.paid", DEEP],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert "payload is nested too deeply" in line
    assert "Traceback" not in proc.stderr
