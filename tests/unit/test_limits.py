"""Pure helpers behind limits and timeouts: token bucket, soft limit, deadline heaps."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_troupe.actors.core.deadlines import Wakeups
from mcp_troupe.actors.core.limits import GlobalPending, SoftLimit, TokenBucket
from mcp_troupe.actors.core.options import Limits
from mcp_troupe.actors.core.pending import PendingTable


def test_token_bucket_grants_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert abs(bucket.take(0.0) - 0.1) < 1e-9
    assert bucket.take(0.11) == 0.0
    assert bucket.take(10.0) == 0.0 and bucket.take(10.0) == 0.0 and bucket.take(10.0) == 0.0
    assert bucket.take(10.0) > 0  # never more than the burst saved up


def test_token_bucket_rate_zero_is_unlimited() -> None:
    bucket = TokenBucket(rate=0, burst=1, now=0.0)
    assert all(bucket.take(0.0) == 0.0 for _ in range(1000))


def test_soft_limit_fires_once_per_upward_crossing() -> None:
    alarm = SoftLimit(limit=10, ratio=0.8)
    assert [alarm.crossed(n) for n in (1, 7, 8, 9, 10, 8)] == [False, False, True, False, False, False]
    assert alarm.crossed(3) is False
    assert alarm.crossed(8) is True


def test_global_pending_admits_up_to_its_limit() -> None:
    pending = GlobalPending(limit=2)
    assert pending.admit() is None and pending.admit() is None
    assert pending.admit() == (2, 2)
    pending.apply(-1)
    assert pending.admit() is None and pending.count == 2


def test_timeout_for_methods() -> None:
    limits = Limits(request_timeout=5, initialize_timeout=20, timeouts={"tools/call": 60, "initialize": 9})
    assert limits.timeout_for("tools/list") == 5
    assert limits.timeout_for("tools/call") == 60
    assert limits.timeout_for("initialize") == 9
    assert Limits(request_timeout=5).timeout_for("initialize") == 0, "initialize has its own timeout: none by default"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.floats(0, 100), st.sampled_from("abcde")), max_size=60),
    st.floats(0, 100),
)
def test_wakeups_pop_exactly_the_keys_whose_latest_time_is_due(
    steps: list[tuple[bool, float, str]], now: float
) -> None:
    wakeups: Wakeups[str] = Wakeups()
    latest: dict[str, float] = {}
    for discard, at, key in steps:
        if discard:
            wakeups.discard(key)
            latest.pop(key, None)
        else:
            wakeups.set(key, at)
            latest[key] = at
    due = wakeups.pop_due(now)
    assert sorted(due) == sorted(key for key, at in latest.items() if at <= now)
    assert [latest[key] for key in due] == sorted(latest[key] for key in due), "earliest first"
    left = {key: at for key, at in latest.items() if at > now}
    assert len(wakeups) == len(left)
    assert wakeups.next_at() == (min(left.values()) if left else None)


def test_wakeups_of_discarded_keys_leave_nothing_behind() -> None:
    wakeups: Wakeups[int] = Wakeups()
    for i in range(10_000):  # sessions that ask for a wake-up and finish before it comes
        wakeups.set(i, 1000.0 + i)
        wakeups.discard(i)
    assert len(wakeups) == 0 and wakeups.heap_size < 200
    assert wakeups.pop_due(1e9) == []


def test_pending_table_expires_in_deadline_order_and_stays_small() -> None:
    table = PendingTable()
    for i in range(10_000):  # a busy session: each request answered at once
        table.add(i, "tools/call", now=float(i), timeout=30.0)
        assert table.pop(i) is not None
    assert len(table._heap) < 200  # stale deadlines are compacted, not kept for 30 s
    table.add("late", "x", now=0.0, timeout=5.0)
    table.add("early", "x", now=0.0, timeout=1.0, progress_token="t")
    assert table.next_deadline() == 1.0
    table.progress("t", now=0.5, extend=True)
    assert table.next_deadline() == 1.5
    assert [p.id for p in table.expire(5.0)] == ["early", "late"]
    assert len(table) == 0 and table.next_deadline() is None
