"""Event types and the endpoint patterns that select them: pure validation and matching.

A pattern is an event type in which ``*`` stands for any run of characters (dots included):
``order.*`` matches ``order.paid`` and ``order.item.added``; ``*`` matches everything. The database
applies the same rule in ``courier.event_type_matches`` when it fans events out; a test checks that
the two agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

EVENT_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
PATTERN_RE = re.compile(r"^[A-Za-z0-9_.:*-]{1,200}$")
MAX_PATTERNS = 64


def is_valid_event_type(event_type: str) -> bool:
    """1-200 letters, digits, ``_ . : -``, starting with a letter or digit."""
    return EVENT_TYPE_RE.fullmatch(event_type) is not None


def validate_patterns(patterns: Sequence[str]) -> list[str]:
    """Problems with a list of patterns, one readable sentence each (empty when valid)."""
    problems: list[str] = []
    if not patterns:
        problems.append("at least one event type pattern is needed")
    if len(patterns) > MAX_PATTERNS:
        problems.append(f"at most {MAX_PATTERNS} patterns are allowed")
    for pattern in patterns:
        if not PATTERN_RE.fullmatch(pattern):
            problems.append(
                f"{pattern!r} is not a pattern: use letters, digits, '_', '.', ':', '-' and '*'"
            )
    return problems


def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$", re.S)


def matches(patterns: Iterable[str], event_type: str) -> bool:
    """True when any pattern selects ``event_type``."""
    return any(_regex(p).match(event_type) for p in patterns)
