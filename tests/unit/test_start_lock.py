"""Bundled Postgres servers start one at a time on a machine (pgcourier.embedded).

Two test workers starting their servers at once on a fresh CI machine raced to create the
wheels' system user, and one worker's initdb failed on a data directory it did not own. The race
itself needs a machine without that user, so it is not reproduced here; what is held is the
lock that keeps starts apart: across processes, one start's span never overlaps another's."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

from pgcourier.embedded import one_start_at_a_time

HOLD = """
import sys, time
from pathlib import Path
from pgcourier.embedded import one_start_at_a_time
with one_start_at_a_time(Path(sys.argv[1])):
    start = time.time()
    time.sleep(0.3)
    print(start, time.time())
"""


def test_starts_take_turns_across_processes(tmp_path: Path) -> None:
    lock = tmp_path / "start.lock"
    procs = [
        subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    spans = sorted(tuple(map(float, p.communicate(timeout=30)[0].split())) for p in procs)
    assert all(p.returncode == 0 for p in procs)
    assert len(spans) == 3
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, spans  # the next start began only once the previous one ended


def test_a_lock_file_that_cannot_be_opened_does_not_stop_a_start(tmp_path: Path) -> None:
    """Best effort: a lock file in a directory that does not exist (or another user's) means
    no lock, not a server that cannot start."""
    entered = False
    with one_start_at_a_time(tmp_path / "missing" / "start.lock"):
        entered = True
    assert entered
