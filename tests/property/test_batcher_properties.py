"""Property tests of the micro-batcher's invariants under random arrivals, cancels and failures.

Each example runs its own event loop through a random scenario (submits with random lengths,
groups, priorities and deadlines; cancels; clock jumps; pauses) against a fake ``score_fn`` that
sometimes raises or returns too few results, then checks:

* every submitted item gets exactly one outcome, even when the batcher is stopped mid-flight;
* no batch exceeds ``max_batch_size`` or its token budget (a lone oversized item excepted), and the
  items of a batch share one group key;
* no item is scored twice; cancelled and expired items are never handed to the backend, and at most
  one batch is with the backend at a time (checked at hand-over, with an executor that the scenario
  drives: it decides when the backend finishes, so batches queue up, get prefetched and cancelled);
* successes and failures land on the right callers.

A second test runs the same scenarios on the batcher's own thread executor.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardwire_backends.base import Readout, ReadoutResult, ScoreItem, ScoreResult
from guardwire_server.batcher import BatcherLimits, BatchOutcome, MicroBatcher
from guardwire_server.errors import BackendFailure, DeadlineExpired, Draining, Overloaded

OK, RAISES, SHORT = 0, 1, 2  # what an item does to the fake backend's batch
HANG_S = 3.0  # a scenario takes milliseconds; this long means something hangs


# -- scenario ops -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submit:
    length: int
    group: int
    priority: int
    deadline_in: float | None  # relative to the fake clock at submit
    kind: int


@dataclass(frozen=True)
class Cancel:
    index: int


@dataclass(frozen=True)
class Advance:
    seconds: float


@dataclass(frozen=True)
class Finish:
    """The backend finishes the batch it holds (manual executor only)."""


@dataclass(frozen=True)
class Pause:
    real_s: float  # 0 = a few bare yields


submits = st.builds(
    Submit,
    length=st.integers(2, 24),
    group=st.sampled_from([0, 0, 1, 2]),
    priority=st.integers(0, 2),
    deadline_in=st.none() | st.sampled_from([0.5, 1.0, 2.0, 5.0]),
    kind=st.sampled_from([OK] * 8 + [RAISES, SHORT]),
)
others = st.one_of(
    st.builds(Cancel, st.integers(0, 1000)),
    st.builds(Advance, st.sampled_from([0.25, 0.6, 1.5])),
    st.builds(Pause, st.sampled_from([0.0, 0.0, 0.001, 0.003])),
    st.just(Finish()),
    st.just(Finish()),
)
bursts = st.lists(submits, min_size=2, max_size=8)  # submitted in one go
ops = st.one_of(submits, bursts, bursts, others)
scenarios = st.lists(ops, min_size=6, max_size=30).map(
    lambda steps: [op for step in steps for op in (step if isinstance(step, list) else [step])]
)
endings = st.sampled_from(["await", "await", "drain", "abort"])
limits_st = st.builds(
    BatcherLimits,
    max_batch_size=st.integers(1, 6),
    max_batch_tokens=st.integers(4, 160),
    max_wait_s=st.sampled_from([0.0005, 0.001, 0.003]),
    max_queue=st.integers(1, 64),
)


# -- fakes --------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ManualExecutor(concurrent.futures.Executor):
    """Holds each call until the scenario says ``finish()`` (or runs it at once in ``auto`` mode).

    ``submit`` is where the batcher hands a batch to the backend: the drop checks must hold there.
    """

    def __init__(self, world: World) -> None:
        self.world = world
        self.pending: list[tuple[Callable[..., Any], tuple[Any, ...], Any]] = []
        self.auto = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        if self.pending:
            self.world.violations.append("a second batch was handed over while one was running")
        self.world.on_hand_over(args[0])
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.pending.append((fn, args, future))
        if self.auto:
            self.finish()
        return future

    def finish(self) -> None:
        while self.pending:
            fn, args, future = self.pending.pop(0)
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)


@dataclass
class World:
    clock: FakeClock
    specs: dict[int, Submit] = field(default_factory=dict)
    deadlines: dict[int, float | None] = field(default_factory=dict)
    cancelled: set[int] = field(default_factory=set)  # task.cancel() was called
    batches: list[list[ScoreItem]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def on_hand_over(self, items: Sequence[ScoreItem]) -> None:
        for item in items:
            uid = item.tail_ids[0]
            if uid in self.cancelled:
                self.violations.append(f"item {uid} was handed over after its caller cancelled")
            deadline = self.deadlines[uid]
            if deadline is not None and deadline <= self.clock.now:
                self.violations.append(f"item {uid} was handed over after its deadline")

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        self.batches.append(list(items))
        kinds = {item.tail_ids[1] for item in items}
        if RAISES in kinds:
            raise RuntimeError("fake backend failure")
        results = [
            ScoreResult(
                readouts=(ReadoutResult(logits=(float(item.tail_ids[0]),), logsumexp=None),),
                computed_tokens=len(item.tail_ids),
                cached_tokens=0,
            )
            for item in items
        ]
        return results[:-1] if SHORT in kinds else results


# -- the scenario -------------------------------------------------------------------------------


async def run_scenario(
    world: World,
    use_manual: bool,
    limits: BatcherLimits,
    padded: bool,
    steps: list[Any],
    ending: str,
) -> dict[int, object]:
    manual = ManualExecutor(world) if use_manual else None
    batcher = MicroBatcher(world.score, limits, executor=manual, clock=world.clock, padded=padded)
    await batcher.start()
    tasks: dict[int, asyncio.Task[BatchOutcome]] = {}
    try:
        return await drive(world, batcher, manual, limits, steps, ending, tasks)
    finally:  # also when an assertion above fails: leave no task pending on a closed loop
        if manual is not None:
            manual.auto = True
            manual.finish()
        await batcher.stop(drain=False)
        for task in tasks.values():
            task.cancel()
        if tasks:
            await asyncio.wait(list(tasks.values()))


async def drive(
    world: World,
    batcher: MicroBatcher,
    manual: ManualExecutor | None,
    limits: BatcherLimits,
    steps: list[Any],
    ending: str,
    tasks: dict[int, asyncio.Task[BatchOutcome]],
) -> dict[int, object]:
    for step in steps:
        if isinstance(step, Submit):
            uid = len(world.specs)
            world.specs[uid] = step
            deadline = None if step.deadline_in is None else world.clock.now + step.deadline_in
            world.deadlines[uid] = deadline
            item = ScoreItem(
                prefix_ids=(step.group, 99),
                tail_ids=(uid, step.kind) + (0,) * (step.length - 2),
                readouts=(Readout(position=-1, token_ids=(1,)),),
            )
            tasks[uid] = asyncio.ensure_future(
                batcher.submit(item, deadline=deadline, priority=step.priority)
            )
        elif isinstance(step, Cancel):
            waiting = [uid for uid, task in tasks.items() if not task.done()]
            if waiting:
                uid = waiting[step.index % len(waiting)]
                if tasks[uid].cancel():
                    world.cancelled.add(uid)
        elif isinstance(step, Finish) and manual is not None:
            manual.finish()
        elif isinstance(step, Advance):
            world.clock.now += step.seconds
        elif isinstance(step, Pause):
            if step.real_s:
                await asyncio.sleep(step.real_s)
            else:
                for _ in range(3):
                    await asyncio.sleep(0)
        if batcher.in_flight > limits.max_queue:
            world.violations.append(f"{batcher.in_flight} in flight > max_queue")
    if manual is not None:  # from here on the backend answers at once
        manual.auto = True
        manual.finish()
    if ending == "await" and tasks:
        await asyncio.wait(list(tasks.values()), timeout=HANG_S)
    await asyncio.wait_for(batcher.stop(drain=ending != "abort"), HANG_S)
    # Nothing may hang once stop() has returned: every task is done, or finishes at once.
    if tasks:
        await asyncio.wait(list(tasks.values()), timeout=0.5)
    outcomes: dict[int, object] = {}
    for uid, task in tasks.items():
        if not task.done():
            world.violations.append(f"item {uid} never got an outcome")
            task.cancel()
        elif task.cancelled():
            outcomes[uid] = asyncio.CancelledError()
        else:
            outcomes[uid] = task.exception() or task.result()
    if batcher.in_flight or batcher.queue_depth:
        world.violations.append(f"left over: {batcher.in_flight=} {batcher.queue_depth=}")
    return outcomes


def check(
    world: World, limits: BatcherLimits, padded: bool, ending: str, outcomes: dict[int, object]
) -> None:
    assert not world.violations, world.violations
    where: dict[int, list[ScoreItem]] = {}
    for batch in world.batches:
        lengths = [len(item.tail_ids) for item in batch]
        cost = max(lengths) * len(batch) if padded else sum(lengths)
        assert 1 <= len(batch) <= limits.max_batch_size
        assert cost <= limits.max_batch_tokens or len(batch) == 1, (lengths, limits)
        assert len({item.prefix_ids for item in batch}) == 1, "mixed groups in one batch"
        for item in batch:
            uid = item.tail_ids[0]
            assert uid not in where, f"item {uid} scored twice"
            where[uid] = batch

    assert set(outcomes) == set(world.specs)
    for uid, outcome in outcomes.items():
        batch = where.get(uid)
        kinds = {item.tail_ids[1] for item in batch} if batch else set()
        if isinstance(outcome, BatchOutcome):
            assert batch is not None and kinds == {OK}
            assert outcome.result.readouts[0].logits == (float(uid),)
            assert outcome.batch_size == len(batch)
            assert outcome.queue_s >= 0 and outcome.inference_s >= 0
        elif isinstance(outcome, BackendFailure):
            assert batch is not None and kinds != {OK}, f"item {uid}: {outcome}"
            assert f"batch of {len(batch)}" in str(outcome)
            assert outcome.__cause__ is not None  # chained to what the backend did
        elif isinstance(outcome, DeadlineExpired | Overloaded | Draining):
            assert batch is None, f"item {uid} was scored but got {outcome!r}"
            if isinstance(outcome, Draining):
                assert ending == "abort"
            if isinstance(outcome, DeadlineExpired):
                assert world.deadlines[uid] is not None
        elif isinstance(outcome, asyncio.CancelledError):
            assert uid in world.cancelled
        else:
            raise AssertionError(f"item {uid}: unexpected outcome {outcome!r}")


def run_example(
    use_manual: bool, limits: BatcherLimits, padded: bool, steps: list[Any], ending: str
) -> None:
    world = World(clock=FakeClock())
    loop = asyncio.new_event_loop()
    try:
        outcomes = loop.run_until_complete(
            asyncio.wait_for(
                run_scenario(world, use_manual, limits, padded, steps, ending), 4 * HANG_S
            )
        )
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    check(world, limits, padded, ending, outcomes)


def bounded(examples: int) -> settings:
    return settings(
        max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


@bounded(60)
@given(
    limits=limits_st,
    padded=st.booleans(),
    steps=scenarios,
    ending=endings,
)
def test_invariants_with_a_scenario_driven_backend(
    limits: BatcherLimits, padded: bool, steps: list[Any], ending: str
) -> None:
    run_example(True, limits, padded, steps, ending)


@bounded(30)
@given(
    limits=limits_st,
    padded=st.booleans(),
    steps=scenarios,
    ending=endings,
)
def test_invariants_with_the_thread_executor(
    limits: BatcherLimits, padded: bool, steps: list[Any], ending: str
) -> None:
    run_example(False, limits, padded, steps, ending)
