"""Unit tests of the micro-batcher: budgets, wait, grouping, admission, drops, failures, stop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from guardwire_backends.base import Readout, ReadoutResult, ScoreItem, ScoreResult
from guardwire_server.batcher import BatcherLimits, BatchOutcome, MicroBatcher
from guardwire_server.errors import BackendFailure, DeadlineExpired, Draining, Overloaded

# -- helpers ------------------------------------------------------------------------------------


def make_item(uid: int, length: int = 4, prefix: tuple[int, ...] = (1, 2, 3)) -> ScoreItem:
    """An item whose first tail token is its id, so results and batches can be traced back."""
    assert length >= 1
    return ScoreItem(
        prefix_ids=prefix,
        tail_ids=(uid,) + (0,) * (length - 1),
        readouts=(Readout(position=-1, token_ids=(7, 8)),),
    )


def uid_of(item: ScoreItem) -> int:
    return item.tail_ids[0]


class FakeScorer:
    """A synchronous score_fn that records its batches; a gate can hold it inside a call."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[ScoreItem]] = []
        self.delay_s = delay_s
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_if: Callable[[Sequence[ScoreItem]], bool] = lambda items: False
        self.wrong_count = False
        self.threads: list[str] = []

    def __call__(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        self.batches.append(list(items))
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        assert self.gate.wait(timeout=10), "test gate never opened"
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_if(items):
            raise RuntimeError("boom")
        results = [
            ScoreResult(
                readouts=(ReadoutResult(logits=(float(uid_of(it)), 0.0), logsumexp=None),),
                computed_tokens=len(it.tail_ids),
                cached_tokens=0,
            )
            for it in items
        ]
        return results[:-1] if self.wrong_count else results

    def hold(self) -> None:
        self.gate.clear()
        self.entered.clear()

    async def wait_entered(self) -> None:
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, self.entered.wait, 5)

    def release(self) -> None:
        self.gate.set()

    def batch_uids(self) -> list[list[int]]:
        return [[uid_of(it) for it in batch] for batch in self.batches]

    def scored(self) -> set[int]:
        return {uid for batch in self.batch_uids() for uid in batch}


Factory = Callable[..., Awaitable[tuple[MicroBatcher, FakeScorer]]]


@pytest.fixture
async def make_batcher() -> AsyncIterator[Factory]:
    """Builds started batchers; stops them (and opens their gates) at teardown."""
    made: list[tuple[MicroBatcher, FakeScorer]] = []

    async def factory(
        scorer: FakeScorer | None = None, **limits: Any
    ) -> tuple[MicroBatcher, FakeScorer]:
        opts = {k: limits.pop(k) for k in ("padded", "on_batch", "executor") if k in limits}
        limits.setdefault("max_wait_s", 0.001)
        scorer = scorer or FakeScorer()
        batcher = MicroBatcher(scorer, BatcherLimits(**limits), **opts)
        await batcher.start()
        made.append((batcher, scorer))
        return batcher, scorer

    yield factory
    for batcher, scorer in made:
        scorer.release()
        await asyncio.wait_for(batcher.stop(drain=False), 5)


def spawn(batcher: MicroBatcher, item: ScoreItem, **kw: Any) -> asyncio.Task[BatchOutcome]:
    kw.setdefault("deadline", None)
    return asyncio.ensure_future(batcher.submit(item, **kw))


async def settle() -> None:
    """Let queued callbacks and tasks run (no timing involved)."""
    for _ in range(5):
        await asyncio.sleep(0)


# -- limits -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_batch_size", 0),
        ("max_batch_tokens", -1),
        ("max_queue", 0),
        ("max_batch_size", 2.5),
        ("max_queue", True),
        ("max_wait_s", 0),
        ("max_wait_s", float("inf")),
        ("retry_after_s", -0.1),
    ],
)
def test_limits_are_validated_and_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        BatcherLimits(**{field: value})  # type: ignore[arg-type]


def test_limits_defaults() -> None:
    limits = BatcherLimits()
    assert (limits.max_batch_size, limits.max_batch_tokens, limits.max_queue) == (16, 8192, 256)
    assert (limits.max_wait_s, limits.retry_after_s) == (0.005, 0.05)


# -- batching -----------------------------------------------------------------------------------


async def test_batches_by_size(make_batcher: Factory) -> None:
    batcher, scorer = await make_batcher(max_batch_size=4)
    outcomes = await asyncio.gather(*(spawn(batcher, make_item(i)) for i in range(10)))
    assert [len(b) for b in scorer.batches] == [4, 4, 2]
    assert sorted(scorer.scored()) == list(range(10))
    for i, outcome in enumerate(outcomes):
        assert outcome.result.readouts[0].logits[0] == float(i)  # each caller gets its own result
        assert outcome.batch_size == len(next(b for b in scorer.batch_uids() if i in b))


async def test_padded_token_budget_counts_longest_times_n(make_batcher: Factory) -> None:
    batcher, scorer = await make_batcher(max_batch_tokens=100)
    lengths = [10, 10, 40, 10]  # padded: 10,10 fit (20); with 40 it is 120 > 100: cut
    await asyncio.gather(*(spawn(batcher, make_item(i, n)) for i, n in enumerate(lengths)))
    assert scorer.batch_uids() == [[0, 1], [2, 3]]


async def test_unpadded_token_budget_counts_the_sum(make_batcher: Factory) -> None:
    batcher, scorer = await make_batcher(max_batch_tokens=100, padded=False)
    lengths = [10, 10, 40, 40, 1]  # sums: 100 fits exactly, +1 = 101 does not
    await asyncio.gather(*(spawn(batcher, make_item(i, n)) for i, n in enumerate(lengths)))
    assert scorer.batch_uids() == [[0, 1, 2, 3], [4]]


async def test_oversized_item_runs_alone(make_batcher: Factory) -> None:
    batcher, scorer = await make_batcher(max_batch_tokens=50)
    lengths = [5, 500, 5]
    await asyncio.gather(*(spawn(batcher, make_item(i, n)) for i, n in enumerate(lengths)))
    assert scorer.batch_uids() == [[0], [1], [2]]


async def test_waits_at_most_max_wait_for_more_items(make_batcher: Factory) -> None:
    batcher, _ = await make_batcher(max_wait_s=0.05)
    started = time.monotonic()
    outcome = await batcher.submit(make_item(1), deadline=None)
    elapsed = time.monotonic() - started
    assert 0.04 <= elapsed < 1.0
    assert outcome.queue_s >= 0.04


async def test_a_full_batch_does_not_wait(make_batcher: Factory) -> None:
    batcher, scorer = await make_batcher(max_wait_s=30.0, max_batch_size=2)
    started = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(spawn(batcher, make_item(1)), spawn(batcher, make_item(2))), 5
    )
    assert time.monotonic() - started < 1.0
    assert scorer.batch_uids() == [[1, 2]]


async def test_items_coalesce_within_the_window(make_batcher: Factory) -> None:
    batcher, scorer = await make_batcher(max_wait_s=0.3)
    first = spawn(batcher, make_item(1))
    await asyncio.sleep(0.01)  # well inside the window
    second = spawn(batcher, make_item(2))
    await asyncio.gather(first, second)
    assert scorer.batch_uids() == [[1, 2]]


async def test_only_same_group_items_share_a_batch(make_batcher: Factory) -> None:
    batcher, scorer = await make_batcher()
    a, b = (1, 1), (2, 2)
    items = [make_item(i, prefix=a if i % 2 else b) for i in range(8)]
    await asyncio.gather(*(spawn(batcher, it) for it in items))
    for batch in scorer.batches:
        assert len({it.prefix_ids for it in batch}) == 1
    assert sorted(len(batch) for batch in scorer.batches) == [4, 4]


async def test_explicit_group_key_overrides_the_prefix(make_batcher: Factory) -> None:
    batcher, scorer = await make_batcher()
    await asyncio.gather(
        spawn(batcher, make_item(1, prefix=(1,)), group_key="policy-a"),
        spawn(batcher, make_item(2, prefix=(2,)), group_key="policy-a"),
    )
    assert scorer.batch_uids() == [[1, 2]]


async def test_the_group_that_waited_longest_goes_first(make_batcher: Factory) -> None:
    batcher, scorer = await make_batcher(max_batch_size=2)
    scorer.hold()
    blocker = spawn(batcher, make_item(0, prefix=(9,)))
    await scorer.wait_entered()
    lonely = spawn(batcher, make_item(1, prefix=(1,)))  # oldest, never full
    await settle()
    crowd = [spawn(batcher, make_item(i, prefix=(2,))) for i in range(2, 6)]  # full twice over
    await settle()
    scorer.release()
    await asyncio.gather(blocker, lonely, *crowd)
    assert scorer.batch_uids() == [[0], [1], [2, 3], [4, 5]]


async def test_priority_then_earliest_deadline_then_arrival(make_batcher: Factory) -> None:
    batcher, scorer = await make_batcher(max_batch_size=1)
    scorer.hold()
    blocker = spawn(batcher, make_item(0))
    await scorer.wait_entered()
    far = time.monotonic() + 60
    tasks = [
        spawn(batcher, make_item(1)),  # no deadline, priority 0
        spawn(batcher, make_item(2), deadline=far + 2),
        spawn(batcher, make_item(3), deadline=far + 1),
        spawn(batcher, make_item(4), priority=5),
        spawn(batcher, make_item(5), priority=5, deadline=far),
        spawn(batcher, make_item(6)),
    ]
    await settle()
    scorer.release()
    await asyncio.gather(blocker, *tasks)
    assert [b[0] for b in scorer.batch_uids()] == [0, 5, 4, 3, 2, 1, 6]


async def test_full_batch_is_prefetched_at_most_one(make_batcher: Factory) -> None:
    batcher, scorer = await make_batcher(max_batch_size=2)
    scorer.hold()
    blocker = spawn(batcher, make_item(0))
    await scorer.wait_entered()
    tasks = [spawn(batcher, make_item(i)) for i in range(1, 6)]
    await settle()
    assert batcher.queue_depth == 5  # 2 prepared + 3 still queued
    assert batcher.in_flight == 6
    scorer.release()
    await asyncio.gather(blocker, *tasks)
    assert scorer.batch_uids() == [[0], [1, 2], [3, 4], [5]]
    assert batcher.queue_depth == 0 and batcher.in_flight == 0


# -- admission ----------------------------------------------------------------------------------


async def test_overload_is_rejected_immediately(make_batcher: Factory) -> None:
    batcher, scorer = await make_batcher(max_queue=2, retry_after_s=0.25)
    scorer.hold()
    running = spawn(batcher, make_item(1))
    await scorer.wait_entered()
    queued = spawn(batcher, make_item(2))
    await settle()
    with pytest.raises(Overloaded) as info:
        await asyncio.wait_for(batcher.submit(make_item(3), deadline=None), 0.5)
    assert info.value.retry_after_s == 0.25
    assert info.value.metadata == {"queue_limit": "2"}
    assert batcher.in_flight == 2
    scorer.release()
    await asyncio.gather(running, queued)
    assert 3 not in scorer.scored()
    await batcher.submit(make_item(4), deadline=None)  # slots were released


async def test_submit_needs_start() -> None:
    batcher = MicroBatcher(FakeScorer(), BatcherLimits())
    with pytest.raises(RuntimeError, match="start"):
        await batcher.submit(make_item(1), deadline=None)
    await batcher.stop()


async def test_start_twice_is_an_error(make_batcher: Factory) -> None:
    batcher, _ = await make_batcher()
    with pytest.raises(RuntimeError, match="already"):
        await batcher.start()


# -- deadlines and cancellation -----------------------------------------------------------------


async def test_deadline_already_passed_fails_at_submit(make_batcher: Factory) -> None:
    batcher, scorer = await make_batcher()
    with pytest.raises(DeadlineExpired, match="before the item was queued"):
        await batcher.submit(make_item(1), deadline=time.monotonic() - 1)
    assert batcher.in_flight == 0 and scorer.batches == []


async def test_deadline_expired_in_queue_is_never_scored(make_batcher: Factory) -> None:
    batcher, scorer = await make_batcher()
    scorer.hold()
    blocker = spawn(batcher, make_item(0))
    await scorer.wait_entered()
    doomed = spawn(batcher, make_item(1), deadline=time.monotonic() + 0.02)
    alive = spawn(batcher, make_item(2), deadline=time.monotonic() + 60)
    await asyncio.sleep(0.05)
    scorer.release()
    await asyncio.gather(blocker, alive)
    with pytest.raises(DeadlineExpired, match=r"expired after [\d.]+ ms in queue before inference"):
        await doomed
    assert 1 not in scorer.scored()
    assert batcher.in_flight == 0


async def test_cancelled_while_queued_is_never_scored(make_batcher: Factory) -> None:
    batcher, scorer = await make_batcher()
    scorer.hold()
    blocker = spawn(batcher, make_item(0))
    await scorer.wait_entered()
    gone = spawn(batcher, make_item(1))
    kept = spawn(batcher, make_item(2))
    await settle()
    assert batcher.in_flight == 3
    gone.cancel()
    await settle()
    assert batcher.in_flight == 2 and batcher.queue_depth == 1  # released at once
    scorer.release()
    await asyncio.gather(blocker, kept)
    assert gone.cancelled()
    assert scorer.batch_uids() == [[0], [2]]


async def test_cancelled_while_prefetched_is_never_scored(make_batcher: Factory) -> None:
    batcher, scorer = await make_batcher(max_batch_size=2)
    scorer.hold()
    blocker = spawn(batcher, make_item(0))
    await scorer.wait_entered()
    first, second = spawn(batcher, make_item(1)), spawn(batcher, make_item(2))
    await settle()  # full: cut and prepared while the blocker runs
    first.cancel()
    await settle()
    assert batcher.in_flight == 2
    scorer.release()
    await asyncio.gather(blocker, second)
    assert scorer.batch_uids() == [[0], [2]]


async def test_cancelled_while_running_discards_the_result(make_batcher: Factory) -> None:
    batcher, scorer = await make_batcher()
    scorer.hold()
    task = spawn(batcher, make_item(1))
    await scorer.wait_entered()
    task.cancel()
    await settle()
    assert batcher.in_flight == 1  # still running on the backend
    scorer.release()
    with pytest.raises(asyncio.CancelledError):
        await task
    after = await batcher.submit(make_item(2), deadline=None)  # the batcher carries on
    assert after.batch_size == 1
    assert batcher.in_flight == 0


# -- failures -----------------------------------------------------------------------------------


async def test_backend_exception_fails_every_item_of_that_batch_only(
    make_batcher: Factory,
) -> None:
    batcher, scorer = await make_batcher()
    scorer.fail_if = lambda items: any(it.prefix_ids == (66,) for it in items)
    bad = [spawn(batcher, make_item(i, prefix=(66,))) for i in range(3)]
    good = [spawn(batcher, make_item(i, prefix=(1,))) for i in range(3, 5)]
    outcomes = await asyncio.gather(*bad, *good, return_exceptions=True)
    errors = outcomes[:3]
    assert all(isinstance(e, BackendFailure) for e in errors)
    assert len({id(e) for e in errors}) == 3  # one exception per waiter
    for error in errors:
        assert isinstance(error, BackendFailure)
        assert "failed on a batch of 3" in str(error)
        assert isinstance(error.__cause__, RuntimeError)
    assert all(isinstance(o, BatchOutcome) for o in outcomes[3:])
    assert batcher.in_flight == 0
    assert isinstance(await batcher.submit(make_item(9, prefix=(1,)), deadline=None), BatchOutcome)


async def test_wrong_result_count_is_a_backend_failure(make_batcher: Factory) -> None:
    batcher, scorer = await make_batcher()
    scorer.wrong_count = True
    outcomes = await asyncio.gather(
        spawn(batcher, make_item(1)), spawn(batcher, make_item(2)), return_exceptions=True
    )
    for outcome in outcomes:
        assert isinstance(outcome, BackendFailure)
        assert "batch of 2" in str(outcome) and "returned 1 results" in str(outcome)


async def test_on_batch_reports_and_its_errors_are_contained(make_batcher: Factory) -> None:
    reports: list[tuple[int, int, list[float], float]] = []

    def on_batch(size: int, tokens: int, waits: list[float], inference_s: float) -> None:
        reports.append((size, tokens, waits, inference_s))
        raise RuntimeError("telemetry bug")

    batcher, _ = await make_batcher(FakeScorer(delay_s=0.02), on_batch=on_batch)
    outcomes = await asyncio.gather(
        spawn(batcher, make_item(1, 3)), spawn(batcher, make_item(2, 5))
    )
    assert len(reports) == 1
    size, tokens, waits, inference_s = reports[0]
    assert (size, tokens, len(waits)) == (2, 10, 2)  # padded: 5 x 2
    assert inference_s >= 0.02 and all(w >= 0 for w in waits)
    assert all(o.inference_s == inference_s and o.batch_size == 2 for o in outcomes)


class RecordingTrace:
    def __init__(self, size: int, tokens: int, fail: bool) -> None:
        self.opened = (size, tokens)
        self.context = ("span", size)
        self.finished: list[tuple[Any, Any]] = []
        self.fail = fail

    def finish(self, results: Sequence[ScoreResult] | None, error: BaseException | None) -> None:
        self.finished.append((results, error))
        if self.fail:
            raise RuntimeError("telemetry bug")


async def test_trace_batch_wraps_each_batch_and_links_its_items(make_batcher: Factory) -> None:
    traces: list[RecordingTrace] = []

    def trace_batch(size: int, tokens: int) -> RecordingTrace:
        traces.append(RecordingTrace(size, tokens, fail=len(traces) == 1))
        return traces[-1]

    batcher, scorer = await make_batcher()
    batcher.trace_batch = trace_batch
    scorer.fail_if = lambda items: uid_of(items[0]) == 3
    ok = await asyncio.gather(spawn(batcher, make_item(1, 3)), spawn(batcher, make_item(2, 5)))
    assert traces[0].opened == (2, 10)
    assert [o.batch_span_context for o in ok] == [("span", 2)] * 2
    assert traces[0].finished[0][1] is None and len(traces[0].finished[0][0]) == 2
    with pytest.raises(BackendFailure):  # a failing trace.finish does not get in the way
        await batcher.submit(make_item(3), deadline=None)
    assert isinstance(traces[1].finished[0][1], RuntimeError)

    def broken(size: int, tokens: int) -> RecordingTrace:
        raise RuntimeError("telemetry bug")

    batcher.trace_batch = broken
    outcome = await batcher.submit(make_item(4), deadline=None)
    assert outcome.batch_span_context is None


# -- executor -----------------------------------------------------------------------------------


async def test_inference_runs_off_the_event_loop(make_batcher: Factory) -> None:
    batcher, scorer = await make_batcher(FakeScorer(delay_s=0.3))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    tick_task = asyncio.ensure_future(ticker())
    try:
        outcome = await batcher.submit(make_item(1), deadline=None)
    finally:
        tick_task.cancel()
    assert outcome.inference_s >= 0.3
    assert ticks >= 10  # the loop kept turning while score_fn slept
    assert scorer.threads[0] != threading.main_thread().name


async def test_an_external_executor_is_used_and_not_shut_down(make_batcher: Factory) -> None:
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mine") as pool:
        batcher, scorer = await make_batcher(executor=pool)
        await batcher.submit(make_item(1), deadline=None)
        await batcher.stop(drain=True)
        assert scorer.threads[0].startswith("mine")
        assert pool.submit(lambda: 42).result() == 42


# -- stop ---------------------------------------------------------------------------------------


async def test_stop_with_drain_finishes_everything_queued(make_batcher: Factory) -> None:
    batcher, scorer = await make_batcher(max_batch_size=2, max_wait_s=30.0)
    scorer.hold()
    tasks = [spawn(batcher, make_item(i)) for i in range(5)]
    await scorer.wait_entered()
    stopping = asyncio.ensure_future(batcher.stop(drain=True))
    await settle()
    with pytest.raises(Draining):
        await batcher.submit(make_item(99), deadline=None)
    assert not stopping.done()
    scorer.release()
    await asyncio.wait_for(stopping, 5)
    outcomes = await asyncio.gather(*tasks)
    assert all(isinstance(o, BatchOutcome) for o in outcomes)
    assert sorted(scorer.scored()) == list(range(5))
    assert batcher.in_flight == 0


async def test_stop_without_drain_fails_queued_and_finishes_running(make_batcher: Factory) -> None:
    batcher, scorer = await make_batcher()
    scorer.hold()
    running = spawn(batcher, make_item(0))
    await scorer.wait_entered()
    queued = [spawn(batcher, make_item(i)) for i in (1, 2)]
    await settle()
    stopping = asyncio.ensure_future(batcher.stop(drain=False))
    await settle()
    for task in queued:
        assert task.done()
        with pytest.raises(Draining):
            task.result()
    scorer.release()
    await asyncio.wait_for(stopping, 5)
    assert isinstance(await running, BatchOutcome)
    assert scorer.batch_uids() == [[0]]
    assert batcher.in_flight == 0 and batcher.queue_depth == 0


async def test_stop_is_idempotent_and_works_unstarted() -> None:
    batcher = MicroBatcher(FakeScorer(), BatcherLimits())
    await batcher.stop(drain=False)
    await batcher.stop(drain=True)
