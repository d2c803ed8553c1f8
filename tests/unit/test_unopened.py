"""The relay's memory of endpoints whose secrets its keys do not open (pgcourier.unopened)."""

from __future__ import annotations

import uuid

from pgcourier.unopened import UnopenedSecrets


def test_news_once_per_endpoint_while_it_lasts_and_ready_again_after_two_holds() -> None:
    now = [100.0]
    seen = UnopenedSecrets(hold=10.0, clock=lambda: now[0])
    a, b = uuid.uuid4(), uuid.uuid4()
    assert not len(seen)
    assert seen.note(a, 3)  # news: log it
    assert not seen.note(a, 3)  # handed back again 10 s later: no new error
    now[0] += 10.0
    assert not seen.note(a, 1)
    assert seen.note(b, 1)
    assert seen.handed_back == 8
    assert seen.endpoints == sorted([a, b])
    now[0] += 15.0  # b came back within two holds; so did a
    assert len(seen.endpoints) == 2
    now[0] += 6.0  # 21 s since either was met: another relay sent them
    assert seen.endpoints == []
    assert not len(seen)
    assert seen.note(a, 1)  # met again later: news again
    seen.opened(a)  # its secret opened after all
    assert not len(seen)
