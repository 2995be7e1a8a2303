"""Asyncio micro-batcher between the gRPC handlers and a synchronous backend.

Handlers ``await batcher.submit(item, deadline=...)``; one owner task turns the queue into batches
and runs the blocking ``score_fn`` in an executor thread, so the event loop never blocks.

Policy, in the order it is applied:

* **Admission.** Queued plus running items are counted. At ``max_queue`` a submit raises
  ``Overloaded`` at once (never queued, carries ``retry_after_s``). An already expired deadline
  raises ``DeadlineExpired`` at once; a stopping batcher raises ``Draining``.
* **Grouping.** Only items with the same group key share a batch (default: ``item.prefix_ids``, so
  one batch shares one cacheable prefix). The next batch comes from the group whose oldest item has
  waited longest, so no group starves another.
* **Order within a group.** Higher ``priority`` first, then earliest deadline (``None`` last), then
  arrival. The batch is cut greedily in that order and stops at the first item that does not fit,
  so a later small item never jumps the order.
* **Budgets.** At most ``max_batch_size`` items and a token cost of at most ``max_batch_tokens``,
  where the cost is ``max(len(tail_ids)) * n`` for padded backends and ``sum(len(tail_ids))``
  otherwise (the shared prefix is not counted). A single item over the budget runs alone.
* **Wait.** A batch is cut when its group is full (by size or tokens), or when its oldest item has
  waited ``max_wait_s`` and the backend is free. While the backend is busy a batch is cut early only
  if full, and at most one such batch is prepared (prefetch 1); anything else keeps gathering items
  until the backend frees up.
* **Drops.** Items whose caller has gone (cancelled future) or whose deadline has passed are dropped
  when a batch is assembled and again just before it is launched: they are never scored. Expired
  items get ``DeadlineExpired``.
* **Failures.** If ``score_fn`` raises, or returns the wrong number of results, every item of that
  batch gets its own ``BackendFailure`` chained to the cause; other batches are unaffected.
* **Watchdog.** With ``inference_timeout_s`` set, a batch whose ``score_fn`` call has not returned
  in time fails like a raising one (``InferenceTimeout``: "inference exceeded X s") without
  waiting for the thread. "In time" is ``inference_timeout_s`` or, for a batch that is big for
  this machine, ``WATCHDOG_SLACK`` times its expected duration (its cost times the seconds per
  cost unit measured on earlier batches), whichever is longer: a 1B model on two CPU cores can
  legitimately spend minutes on a full batch, and that is not a hang. On a hang, queued items
  fail too, and until the stuck call returns no batch is launched and ``submit`` raises
  ``BackendFailure`` at once. ``watch`` (``guardwire_server.health_monitor``)
  hears of every batch's outcome and of the stuck call.
* **Outcomes.** Every admitted item ends with exactly one outcome: a ``BatchOutcome`` or an
  exception. ``stop(drain=True)`` scores everything queued first; ``stop(drain=False)`` fails queued
  items with ``Draining`` (a running batch still finishes and delivers).

Example::

    batcher = MicroBatcher(backend.score, BatcherLimits(), padded=backend.capabilities.is_padded)
    await batcher.start()
    outcome = await batcher.submit(item, deadline=time.monotonic() + 0.5)
    outcome.result, outcome.queue_s, outcome.inference_s, outcome.batch_size
    await batcher.stop(drain=True)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import itertools
import logging
import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from guardwire_backends.base import InferenceError, ScoreItem, ScoreResult
from guardwire_server.errors import BackendFailure, DeadlineExpired, Draining, Overloaded

__all__ = [
    "WATCHDOG_SLACK",
    "BatchCallback",
    "BatchOutcome",
    "BatchTrace",
    "BatchTracer",
    "BatchWatch",
    "BatcherLimits",
    "InferenceTimeout",
    "MicroBatcher",
    "ScoreFn",
]

logger = logging.getLogger(__name__)

ScoreFn = Callable[[Sequence[ScoreItem]], list[ScoreResult]]
#: ``on_batch(batch_size, batch_tokens, queue_wait_s_list, inference_s)``, called after each batch.
BatchCallback = Callable[[int, int, list[float], float], None]


class BatchTrace(Protocol):
    """The trace of one batch (``guardwire_server.telemetry`` opens a span); ``context`` is handed
    to each
    item's ``BatchOutcome`` so that the request's trace can link to the batch."""

    @property
    def context(self) -> object: ...

    def finish(
        self, results: Sequence[ScoreResult] | None, error: BaseException | None
    ) -> None: ...


#: ``trace_batch(batch_size, batch_tokens)``, called when a batch is launched.
BatchTracer = Callable[[int, int], BatchTrace]


class InferenceTimeout(InferenceError):
    """The watchdog gave up on a ``score_fn`` call (the thread may still be running)."""


class BatchWatch(Protocol):
    """Hears how batches end (``guardwire_server.health_monitor.HealthMonitor``); called on the
    loop."""

    def batch_finished(self, size: int, error: BaseException | None) -> None: ...

    def inference_hung(self, timeout_s: float) -> None: ...

    def inference_returned(self, error: BaseException | None) -> None: ...


class _NoTrace:
    context = None

    def finish(self, results: Sequence[ScoreResult] | None, error: BaseException | None) -> None:
        pass


_NO_TRACE = _NoTrace()

# Timers may fire a hair before their due time; treat "almost elapsed" as elapsed.
_WINDOW_SLACK_S = 1e-6

# A batch is hung only past this many times its expected duration (and past inference_timeout_s).
WATCHDOG_SLACK = 4.0


@dataclass(frozen=True, slots=True)
class BatcherLimits:
    """Budgets of the micro-batcher. Counts and token budgets must be positive integers."""

    max_batch_size: int = 16
    max_batch_tokens: int = 8192
    max_wait_s: float = 0.005
    max_queue: int = 256
    retry_after_s: float = 0.05  # hint sent with Overloaded

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_batch_tokens", "max_queue"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_wait_s", "retry_after_s"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    result: ScoreResult
    queue_s: float  # from submit to the launch of its batch
    inference_s: float  # the batch's score_fn call, executor hop included
    batch_size: int  # items in the batch that was scored
    batch_span_context: object | None = None  # telemetry: the batch's span, linked to by items


class _State(enum.Enum):
    QUEUED = "queued"
    PREPARED = "prepared"  # cut into the prefetched batch, not launched yet
    RUNNING = "running"
    DONE = "done"


@dataclass(eq=False, slots=True)
class _Entry:
    item: ScoreItem
    key: Hashable
    priority: int
    deadline: float | None
    seq: int
    enqueued_at: float  # on the batcher's clock (deadlines, reported timings)
    arrived_loop: float  # on the loop's clock (the wait window's timers)
    future: asyncio.Future[BatchOutcome]
    state: _State = _State.QUEUED
    released: bool = False
    cost: int = field(init=False)

    def __post_init__(self) -> None:
        self.cost = len(self.item.tail_ids)

    def order(self) -> tuple[int, float, int]:
        return (-self.priority, math.inf if self.deadline is None else self.deadline, self.seq)


class MicroBatcher:
    """Batches ``ScoreItem``s for a synchronous ``score_fn``; the module docstring has the policy.

    ``clock`` is the time base of ``deadline`` (absolute) and of the reported timings; it must tick
    in seconds with real time. ``padded`` says how a batch's token cost is counted. ``executor``
    runs ``score_fn``; by default the batcher owns a single-thread pool and shuts it down on stop.
    ``on_batch`` and ``trace_batch`` are the telemetry hooks (``guardwire_server.telemetry`` sets
    them);
    a hook that raises is logged and ignored.
    """

    def __init__(
        self,
        score_fn: ScoreFn,
        limits: BatcherLimits,
        *,
        executor: concurrent.futures.Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
        padded: bool = True,
        on_batch: BatchCallback | None = None,
        trace_batch: BatchTracer | None = None,
    ) -> None:
        self._score_fn = score_fn
        self.limits = limits
        self._owns_executor = executor is None
        self._executor: concurrent.futures.Executor = executor or (
            concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="batcher")
        )
        self._clock = clock
        self._padded = padded
        self.on_batch = on_batch
        self.trace_batch = trace_batch
        self.inference_timeout_s: float | None = None  # the watchdog (None or 0: off)
        self._s_per_cost: float | None = None  # measured inference seconds per cost unit (EWMA)
        self._hung_after_s = 0.0  # the watchdog time of the call it left
        self.watch: BatchWatch | None = None
        self._hung: asyncio.Future[list[ScoreResult]] | None = None  # a call the watchdog left
        self._groups: dict[Hashable, list[_Entry]] = {}  # each list in arrival order
        self._prepared: list[_Entry] = []
        self._running: asyncio.Task[None] | None = None
        self._owner: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._admitted = 0
        self._seq = itertools.count()
        self._stopping = False

    # -- observability -------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Items waiting for a batch (not yet running)."""
        return sum(len(group) for group in self._groups.values()) + len(self._prepared)

    @property
    def in_flight(self) -> int:
        """Admitted items not yet finished (queued plus running): what ``max_queue`` bounds."""
        return self._admitted

    @property
    def hung(self) -> bool:
        """A ``score_fn`` call outlived the watchdog and has not returned yet."""
        return self._hung is not None

    def wrap_score_fn(self, wrapper: Callable[[ScoreFn], ScoreFn]) -> None:
        """Replace ``score_fn`` by ``wrapper(score_fn)`` (runs in the executor thread)."""
        self._score_fn = wrapper(self._score_fn)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._owner is not None:
            raise RuntimeError("MicroBatcher.start() was already called")
        self._owner = asyncio.get_running_loop().create_task(self._own(), name="micro-batcher")

    async def stop(self, drain: bool = True) -> None:
        """Stop accepting items; score what is queued (``drain``) or fail it with ``Draining``.

        Returns once the owner task and any running batch have finished. Idempotent.
        """
        self._stopping = True
        if not drain:
            self._fail_queued(Draining, "the batcher stopped before the item was scored")
        self._wakeup.set()
        if self._owner is not None:
            await asyncio.shield(self._owner)
        if self._owns_executor:
            self._executor.shutdown(wait=False)

    # -- submit --------------------------------------------------------------------------------

    async def submit(
        self,
        item: ScoreItem,
        *,
        deadline: float | None,
        group_key: Hashable | None = None,
        priority: int = 0,
    ) -> BatchOutcome:
        """Queue ``item`` and wait for its batch; ``deadline`` is absolute on the batcher's clock.

        Raises ``Overloaded`` (queue full), ``DeadlineExpired`` (before inference), ``Draining``
        (stopping) or ``BackendFailure`` (its batch failed). Cancelling the caller drops the item.
        """
        self.check_admission()
        now = self._clock()
        if deadline is not None and deadline <= now:
            raise DeadlineExpired(
                "deadline expired before the item was queued", metadata={"queue_ms": "0.0"}
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BatchOutcome] = loop.create_future()
        entry = _Entry(
            item=item,
            key=item.prefix_ids if group_key is None else group_key,
            priority=priority,
            deadline=deadline,
            seq=next(self._seq),
            enqueued_at=now,
            arrived_loop=loop.time(),
            future=future,
        )
        self._admitted += 1
        self._groups.setdefault(entry.key, []).append(entry)
        future.add_done_callback(lambda _: self._on_future_done(entry))
        self._wakeup.set()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                future.exception()  # an outcome raced the cancel: mark it retrieved, drop it
            raise

    def check_admission(self) -> None:
        """Raise at once what ``submit`` would refuse with (stopping, stuck backend, full
        queue), so that a caller can refuse before it spends work (rendering) on an item."""
        if self._owner is None:
            raise RuntimeError("MicroBatcher.start() must be awaited before submit()")
        if self._stopping:
            raise Draining("the batcher is stopping and accepts no new items")
        if self._owner.done():
            raise BackendFailure("the batcher's scheduler task has died; see the server log")
        if self._hung is not None:
            raise BackendFailure(
                f"the backend is unhealthy: an inference call has not returned after "
                f"{self._hung_after_s:.3g}s; retry later or on another replica"
            )
        limits = self.limits
        if self._admitted >= limits.max_queue:
            raise Overloaded(
                f"the batcher queue is full ({limits.max_queue} items queued or running); "
                f"retry after {limits.retry_after_s:g} s",
                retry_after_s=limits.retry_after_s,
                queue_limit=limits.max_queue,
            )

    # -- owner task ----------------------------------------------------------------------------

    async def _own(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._wakeup.clear()
                if self._running is not None and self._running.done():
                    self._running = None
                busy = self._running is not None or self._hung is not None
                if self._hung is not None and self._stopping and self._running is None:
                    # stopping behind a stuck call: nothing queued can ever run
                    self._fail_queued(BackendFailure, "the backend is stuck; the batcher stopped")
                    return
                if self._prepared and not busy:
                    batch, self._prepared = self._prepared, []
                    self._launch(batch)
                    continue
                if not self._groups and not self._prepared and not busy and self._stopping:
                    return
                timeout: float | None = None
                if self._groups and not self._prepared:
                    key = min(self._groups, key=lambda k: self._groups[k][0].seq)
                    if not self._purge(key):
                        continue
                    group = self._groups[key]
                    batch, full = self._plan(group)
                    waited = loop.time() - group[0].arrived_loop
                    window_left = self.limits.max_wait_s - waited
                    ready = full or self._stopping or window_left <= _WINDOW_SLACK_S
                    if full or (ready and not busy):
                        self._take(key, batch)
                        if busy:
                            self._prepared = batch
                            for entry in batch:
                                entry.state = _State.PREPARED
                        else:
                            self._launch(batch)
                        continue
                    if not busy:
                        timeout = window_left
                await self._sleep(loop, timeout)
        except Exception:  # a bug here must not leave waiters hanging: log, fail, stop
            logger.exception("the micro-batcher's owner task crashed; failing every queued item")
        finally:
            self._stopping = True
            self._fail_queued(BackendFailure, "the batcher stopped before the item was scored")
            if self._running is not None:
                await asyncio.shield(self._running)

    async def _sleep(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        """Wait for a wake-up (submit, cancel, batch done, stop) or ``timeout`` seconds."""
        if timeout is None:
            await self._wakeup.wait()
            return
        handle = loop.call_later(timeout, self._wakeup.set)
        try:
            await self._wakeup.wait()
        finally:
            handle.cancel()

    def _purge(self, key: Hashable) -> bool:
        """Drop dead items (cancelled or expired) of a group; False if nothing is left."""
        now = self._clock()
        group = [entry for entry in self._groups[key] if self._alive(entry, now)]
        if group:
            self._groups[key] = group
            return True
        del self._groups[key]
        return False

    def _alive(self, entry: _Entry, now: float) -> bool:
        if entry.future.done():  # the caller cancelled
            entry.state = _State.DONE
            self._release(entry)
            return False
        if entry.deadline is not None and entry.deadline <= now:
            waited_ms = (now - entry.enqueued_at) * 1e3
            self._fail(
                entry,
                DeadlineExpired(
                    f"deadline expired after {waited_ms:.1f} ms in queue before inference",
                    metadata={"queue_ms": f"{waited_ms:.1f}"},
                ),
            )
            return False
        return True

    def _plan(self, group: list[_Entry]) -> tuple[list[_Entry], bool]:
        """Cut the next batch of a group greedily in priority order; say if the group is full."""
        max_size, max_tokens = self.limits.max_batch_size, self.limits.max_batch_tokens
        batch: list[_Entry] = []
        cost = 0
        for entry in sorted(group, key=_Entry.order):
            if len(batch) == max_size:
                return batch, True
            with_it = self._cost([*batch, entry])
            if batch and with_it > max_tokens:
                return batch, True
            batch.append(entry)
            cost = with_it
        return batch, len(batch) >= max_size or cost >= max_tokens

    def _cost(self, batch: Sequence[_Entry]) -> int:
        if self._padded:
            return max((e.cost for e in batch), default=0) * len(batch)
        return sum(e.cost for e in batch)

    def _take(self, key: Hashable, batch: list[_Entry]) -> None:
        taken = set(batch)
        rest = [entry for entry in self._groups[key] if entry not in taken]
        if rest:
            self._groups[key] = rest
        else:
            del self._groups[key]

    def _launch(self, batch: list[_Entry]) -> None:
        now = self._clock()
        batch = [entry for entry in batch if self._alive(entry, now)]
        if not batch:
            return
        for entry in batch:
            entry.state = _State.RUNNING
        trace = self._trace(batch)
        loop = asyncio.get_running_loop()
        # Hand the batch to the executor in the same step as the drop check above, so nothing
        # cancelled or expired can slip in between.
        try:
            work = loop.run_in_executor(
                self._executor, self._score_fn, [entry.item for entry in batch]
            )
        except Exception as exc:  # e.g. an executor shut down under us
            work = loop.create_future()
            work.set_exception(exc)
        self._running = loop.create_task(self._execute(batch, work, now, trace))

    def _trace(self, batch: list[_Entry]) -> BatchTrace:
        if self.trace_batch is None:
            return _NO_TRACE
        try:
            return self.trace_batch(len(batch), self._cost(batch))
        except Exception:
            logger.exception("the trace_batch callback raised; ignored")
            return _NO_TRACE

    async def _execute(
        self,
        batch: list[_Entry],
        work: asyncio.Future[list[ScoreResult]],
        started: float,
        trace: BatchTrace,
    ) -> None:
        n, cost = len(batch), self._cost(batch)
        queue_waits = [started - entry.enqueued_at for entry in batch]
        try:
            try:
                results = await self._await_inference(work, n, cost)
                if len(results) != n:
                    raise ValueError(f"score_fn returned {len(results)} results for {n} items")
            except Exception as exc:
                inference_s = self._clock() - started
                _finish(trace, None, exc)
                for entry in batch:
                    failure = BackendFailure(
                        f"the backend failed on a batch of {n} items: {type(exc).__name__}: {exc}"
                    )
                    failure.__cause__ = exc
                    self._fail(entry, failure)
                error: BaseException | None = exc
            else:
                inference_s = self._clock() - started
                error = None
                self._learn_speed(inference_s, cost)
                _finish(trace, results, None)
                for entry, result, queue_s in zip(batch, results, queue_waits, strict=True):
                    if not entry.future.done():  # a cancelled caller's result is discarded
                        entry.future.set_result(
                            BatchOutcome(result, queue_s, inference_s, n, trace.context)
                        )
            self._report(n, cost, queue_waits, inference_s)
            self._tell("batch_finished", n, error)
        finally:
            for entry in batch:  # never leave a waiter hanging, whatever happened above
                if not entry.future.done():
                    self._fail(entry, BackendFailure(f"the backend failed on a batch of {n} items"))
                entry.state = _State.DONE
                self._release(entry)
            self._wakeup.set()

    def watchdog_timeout(self, cost: int) -> float | None:
        """Seconds a batch of ``cost`` may take before the watchdog calls it hung (None: off)."""
        base = self.inference_timeout_s
        if not base or base <= 0:
            return None
        if self._s_per_cost is None:
            return base
        return max(base, WATCHDOG_SLACK * self._s_per_cost * max(cost, 1))

    def _learn_speed(self, inference_s: float, cost: int) -> None:
        rate = inference_s / max(cost, 1)
        old = self._s_per_cost
        self._s_per_cost = rate if old is None else 0.8 * old + 0.2 * rate

    async def _await_inference(
        self, work: asyncio.Future[list[ScoreResult]], n: int, cost: int
    ) -> list[ScoreResult]:
        """``await work``, or raise ``InferenceTimeout`` once the watchdog's time is up; the
        call is then remembered as hung until it returns."""
        timeout = self.watchdog_timeout(cost)
        if timeout is None:
            return await work
        done, _ = await asyncio.wait({work}, timeout=timeout)
        if work in done:
            return work.result()
        self._hung = work
        self._hung_after_s = timeout
        work.add_done_callback(self._hung_returned)
        logger.error(
            "inference exceeded %gs on a batch of %d items; failing it and every queued item, "
            "no new batch until the call returns",
            timeout,
            n,
        )
        self._fail_queued(
            BackendFailure,
            f"the backend is stuck (inference exceeded {timeout:g}s); retry later",
        )
        self._tell("inference_hung", timeout)
        raise InferenceTimeout(f"inference exceeded {timeout:g}s (watchdog)")

    def _hung_returned(self, work: asyncio.Future[list[ScoreResult]]) -> None:
        error = None if work.cancelled() else work.exception()  # marks it retrieved
        logger.warning("the stuck inference call returned (%s)", "error" if error else "ok")
        self._hung = None
        self._tell("inference_returned", error)
        self._wakeup.set()

    def _tell(self, event: str, *args: object) -> None:
        if self.watch is None:
            return
        try:
            getattr(self.watch, event)(*args)
        except Exception:
            logger.exception("the batch watch raised in %s; ignored", event)

    def _report(self, size: int, tokens: int, waits: list[float], inference_s: float) -> None:
        if self.on_batch is None:
            return
        try:
            self.on_batch(size, tokens, waits, inference_s)
        except Exception:
            logger.exception("the on_batch callback raised; ignored")

    # -- outcomes and admission ----------------------------------------------------------------

    def _fail_queued(self, error: type[Draining | BackendFailure], message: str) -> None:
        for entry in [e for group in self._groups.values() for e in group] + self._prepared:
            self._fail(entry, error(message))  # one instance per waiter: tracebacks stay apart
        self._groups.clear()
        self._prepared = []

    def _fail(self, entry: _Entry, error: Exception) -> None:
        """Set ``error`` unless the item already has an outcome; release its admission slot."""
        if not entry.future.done():
            entry.future.set_exception(error)
        entry.state = _State.DONE
        self._release(entry)

    def _release(self, entry: _Entry) -> None:
        if not entry.released:
            entry.released = True
            self._admitted -= 1

    def _on_future_done(self, entry: _Entry) -> None:
        """A caller cancelled: drop its item now if still queued (prepared ones drop at launch)."""
        if not entry.future.cancelled() or entry.state in (_State.RUNNING, _State.DONE):
            return
        if entry.state is _State.QUEUED:
            group = self._groups.get(entry.key)
            if group is not None and entry in group:
                group.remove(entry)
                if not group:
                    del self._groups[entry.key]
            entry.state = _State.DONE
        self._release(entry)


def _finish(trace: BatchTrace, results: list[ScoreResult] | None, error: Exception | None) -> None:
    try:
        trace.finish(results, error)
    except Exception:
        logger.exception("finishing a batch trace raised; ignored")
