"""`RefusalLog`: a peer that sends garbage gets every refusal counted but only a few logged."""

from __future__ import annotations

from mcp_troupe.actors.core.refusals import RefusalLog


def test_the_first_refusals_of_a_window_are_logged_the_rest_summarised() -> None:
    log = RefusalLog(window=10.0, per_window=3)
    logged = [log.note(b"p", "#1 pid 9", "bad_frame", now=float(i) / 1000) for i in range(1000)]
    assert logged[:3] == [True, True, True] and not any(logged[3:])
    assert log.note(b"q", "#2 pid 10", "not_owner", now=1.0), "each peer has its own allowance"
    assert log.summaries(now=5.0) == [], "not before the window ends"
    assert log.summaries(now=10.0) == ["refused 997 more frame(s) from #1 pid 9 in the last 10s (bad_frame 997)"]
    assert log.note(b"p", "#1 pid 9", "bad_frame", now=10.5), "a new window logs again"


def test_the_summary_names_every_code_and_the_table_is_emptied() -> None:
    log = RefusalLog(window=1.0, per_window=0)
    for code in ("bad_frame", "bad_frame", "not_owner"):
        log.note(b"p", "#3", code, now=0.0)
    assert log.summaries(now=1.0) == ["refused 3 more frame(s) from #3 in the last 1s (bad_frame 2, not_owner 1)"]
    assert log.summaries(now=5.0) == []
