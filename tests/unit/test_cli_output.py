"""The CLI's text rendering: receivers' text never reaches the terminal as control codes."""

from __future__ import annotations

import json

import pytest

from pgcourier.cli import printable, render_text

HOSTILE = "\x1b[2J\x1b]0;pwned\x07\x00 \x7f\x9b31m\r\n\t\u2028\u202e\u2066end"
ESCAPED = "\\x1b[2J\\x1b]0;pwned\\x07\\x00 \\x7f\\x9b31m\\x0d\\x0a\\x09\\u2028\\u202e\\u2066end"


def test_printable_escapes_c0_del_c1_and_bidi_controls() -> None:
    assert printable(HOSTILE) == ESCAPED


@pytest.mark.parametrize("text", ["plain", "naïve café ✓", "tab-free, newline-free", ""])
def test_printable_leaves_ordinary_text_alone(text: str) -> None:
    assert printable(text) == text


def test_every_text_shape_is_escaped() -> None:
    outputs = [
        render_text({"response_body": HOSTILE, HOSTILE: 1}),  # key: value lines, keys too
        render_text([{"error": HOSTILE, "n": 1}]),  # tables
        render_text({"attempts": [{"error": HOSTILE}]}),  # tables inside objects
        render_text(HOSTILE),  # a bare value
        render_text({"payload": {"nested": HOSTILE}}),  # JSON inside a cell
    ]
    for out in outputs:
        assert not any(ch in out for ch in "\x1b\x07\x00\x7f\x9b\r\t\u2028\u202e\u2066")
    assert f"response_body: {ESCAPED}" in outputs[0].splitlines()
    assert render_text(HOSTILE) == ESCAPED


def test_json_output_escapes_control_characters_already(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pgcourier.cli import _print_json

    _print_json({"response_body": HOSTILE})
    out = capsys.readouterr().out
    assert not any(ch in out for ch in "\x1b\x07\x00\x7f\x9b\r\u2028\u202e")
    assert json.loads(out) == {"response_body": HOSTILE}


def test_error_lines_are_one_line_without_control_characters() -> None:
    from pgcourier.cli import error_line
    from pgcourier.errors import PgCourierError

    line = error_line(PgCourierError("receiver said:\n\x1b]0;pwned\x07 \x9b2J"))
    assert line == "pgcourier: error: receiver said: \\x1b]0;pwned\\x07 \\x9b2J"
