"""Pure helpers behind limits and timeouts: token bucket, soft limit, deadline heaps."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.deadlines import DeadlineHeap
from actors.limits import GlobalPending, SoftLimit, TokenBucket
from actors.options import Limits
from actors.pending import PendingTable


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
    assert Limits(request_timeout=5).timeout_for("initialize") == 30


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.sampled_from("abcde")), max_size=50), st.floats(0, 100))
def test_deadline_heap_pops_exactly_the_due_keys(pushes: list[tuple[float, str]], now: float) -> None:
    heap: DeadlineHeap[str, int] = DeadlineHeap()
    for n, (at, key) in enumerate(pushes):
        heap.push(at, key, n)
    due = heap.pop_due(now)
    assert set(due) == {key for at, key in pushes if at <= now}
    for key, value in due.items():
        assert value == max(n for n, (at, k) in enumerate(pushes) if k == key and at <= now)
    assert heap.next_at() is None or heap.next_at() > now


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
