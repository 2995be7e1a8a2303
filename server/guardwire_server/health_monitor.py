"""Backend health: failed batches, out-of-memory, hung inference, recovery probes.

The guard must never be the thing that falls over. A request can only ever fail its own batch;
what this module adds is the *server's* view of the backend, which the gRPC health service
reports (``guardwire_server.app`` maps ``healthy`` to SERVING / NOT_SERVING):

* **Failed batches.** ``unhealthy_after`` consecutive failed batches (any exception, out of
  memory, a watchdog timeout) make the backend unhealthy. One successful batch -- a request's
  or the background recovery probe's -- makes it healthy again. While unhealthy, a background
  task submits a tiny probe batch (``guardwire_server.loading.PROBE_CONVERSATIONS``) through the
  batcher
  with exponential backoff (``probe_interval_s`` doubling up to ``max_probe_interval_s``).
  Requests keep flowing meanwhile and fail or succeed on their own: health is advice for the
  load balancer, not a second admission gate.
* **Out of memory.** ``guard_out_of_memory`` wraps the backend's ``score`` (in the batcher's
  worker thread): an exception that looks like ``torch.cuda.OutOfMemoryError`` (by type name,
  ``MemoryError``, or a message such as "CUDA out of memory" / "Failed to allocate memory",
  anywhere in its cause chain) clears the backend's caches -- ``backend.clear_caches()`` when
  it has one, else its ``prefix_cache``, plus ``torch.cuda.empty_cache()`` when torch is loaded
  -- and is re-raised as ``BackendOutOfMemory`` with a message that says so; the batch fails
  with BACKEND_FAILURE and the next batch starts with the memory back.
* **Hung inference.** The batcher's watchdog (``MicroBatcher.inference_timeout_s``) fails a
  batch whose call outlives the timeout; until that call returns the backend is unhealthy (no
  batch can run behind it) and ``submit`` fails fast. When it returns, health follows the
  consecutive-failure count again.

Usage (``guardwire_server.app`` does this when the model is loaded)::

    monitor = HealthMonitor(unhealthy_after=3, probe_interval_s=1.0, on_change=report)
    monitor.attach(guard, inference_timeout_s=30.0)
    ...
    monitor.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from guardwire_backends.base import InferenceError, ScoreItem, ScoreResult
from guardwire_server.batcher import MicroBatcher, ScoreFn

__all__ = [
    "BackendOutOfMemory",
    "HealthMonitor",
    "clear_backend_caches",
    "guard_out_of_memory",
    "is_out_of_memory",
]

log = logging.getLogger(__name__)

_OOM_TYPES = frozenset({"OutOfMemoryError", "OutOfMemory", "CudaOutOfMemoryError"})
_OOM_TEXT = re.compile(
    r"out of memory|failed to allocate memory|CUBLAS_STATUS_ALLOC_FAILED|"
    r"cudaErrorMemoryAllocation|CUDNN_STATUS_ALLOC_FAILED|\bOOM\b",
    re.IGNORECASE,
)
PROBE_PRIORITY = 10  # ahead of requests: a probe is one tiny item


class BackendOutOfMemory(InferenceError):
    """The backend ran out of (GPU) memory on a batch; its caches were cleared."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception in its cause/context chain) is an out-of-memory error:
    ``torch.cuda.OutOfMemoryError`` by type name (torch is never imported here), a
    ``MemoryError``, or a CUDA / ONNX Runtime allocation failure by its message."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        if isinstance(current, MemoryError) or type(current).__name__ in _OOM_TYPES:
            return True
        if _OOM_TEXT.search(str(current)):
            return True
        current = current.__cause__ or current.__context__
    return False


def clear_backend_caches(backend: object) -> bool:
    """Drop what a backend keeps between batches; True when something was cleared. Runs in
    the batcher's worker thread (never concurrently with ``score``)."""
    cleared = False
    hook = getattr(backend, "clear_caches", None)
    if callable(hook):
        hook()
        cleared = True
    else:
        cache = getattr(backend, "prefix_cache", None)
        if cache is not None and callable(getattr(cache, "clear", None)):
            cache.clear()
            cleared = True
    torch: Any = sys.modules.get("torch")  # only when a backend already loaded it
    if torch is not None:
        with contextlib.suppress(Exception):
            if torch.cuda.is_initialized():
                torch.cuda.empty_cache()
                cleared = True
    return cleared


def guard_out_of_memory(
    score_fn: ScoreFn, backend: object, on_oom: Callable[[], None] | None = None
) -> ScoreFn:
    """``score_fn`` with out-of-memory errors turned into ``BackendOutOfMemory`` after the
    backend's caches are cleared (see the module docstring); other errors pass unchanged."""

    def score(items: Sequence[ScoreItem]) -> list[ScoreResult]:
        try:
            return score_fn(items)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            tokens = sum(item.num_tokens for item in items)
            try:
                cleared = clear_backend_caches(backend)
            except Exception:
                log.exception("clearing the backend's caches after out-of-memory failed")
                cleared = False
            if on_oom is not None:
                on_oom()
            log.error(
                "out of memory on a batch of %d items (%d tokens); caches %s",
                len(items),
                tokens,
                "cleared" if cleared else "not cleared (none found)",
            )
            raise BackendOutOfMemory(
                f"out of memory on a batch of {len(items)} items ({tokens} tokens): "
                f"{type(exc).__name__}: {exc}; the backend's caches were "
                f"{'cleared' if cleared else 'not cleared (none found)'}. Retry, or lower "
                "max_batch_tokens / max_batch_size"
            ) from exc

    return score


class HealthMonitor:
    """The backend's health as the server reports it; see the module docstring.

    ``on_change(healthy, reason)`` is called on the event loop when the state flips. Counters
    (``failed_batches``, ``out_of_memory``, ``hangs``, ``recoveries``, ``probes``) are for tests,
    logs and telemetry.
    """

    def __init__(
        self,
        *,
        unhealthy_after: int = 3,
        probe_interval_s: float = 1.0,
        max_probe_interval_s: float = 30.0,
        on_change: Callable[[bool, str], None] | None = None,
    ) -> None:
        if unhealthy_after < 1:
            raise ValueError("unhealthy_after must be >= 1")
        self.unhealthy_after = unhealthy_after
        self.probe_interval_s = probe_interval_s
        self.max_probe_interval_s = max(probe_interval_s, max_probe_interval_s)
        self.on_change = on_change
        self.healthy = True
        self.reason = ""
        self.hung = False
        self.consecutive_failures = 0
        self.last_error = ""
        self.counters = dict.fromkeys(
            ("failed_batches", "out_of_memory", "hangs", "recoveries", "probes"), 0
        )
        self._oom_lock = threading.Lock()
        self._batcher: MicroBatcher | None = None
        self._probe_items: tuple[ScoreItem, ...] = ()
        self._probe_timeout_s = 30.0
        self._probe_task: asyncio.Task[None] | None = None
        self._closed = False

    def attach(self, guard: Any, *, inference_timeout_s: float | None) -> None:
        """Hooks into ``guard.batcher`` (watchdog, batch outcomes, out-of-memory wrapper) and
        prepares the recovery probe from ``guard.adapter``."""
        from guardwire_server.loading import (
            PROBE_CONVERSATIONS,  # guardwire_server.loading builds guards
        )

        batcher: MicroBatcher = guard.batcher
        self._batcher = batcher
        batcher.inference_timeout_s = inference_timeout_s or None
        batcher.watch = self
        batcher.wrap_score_fn(lambda fn: guard_out_of_memory(fn, guard.backend, self._count_oom))
        adapter = guard.adapter
        self._probe_items = adapter.encode(PROBE_CONVERSATIONS[0], adapter.default_policy).items
        self._probe_timeout_s = inference_timeout_s or 30.0

    def close(self) -> None:
        self._closed = True
        if self._probe_task is not None:
            self._probe_task.cancel()

    def _count_oom(self) -> None:  # the worker thread
        with self._oom_lock:
            self.counters["out_of_memory"] += 1

    # -- BatchWatch (called by the batcher, on the loop) -----------------------------------------

    def batch_finished(self, size: int, error: BaseException | None) -> None:
        if error is None:
            self.consecutive_failures = 0
            if not self.hung:
                self._set(True, "")
            return
        self.counters["failed_batches"] += 1
        self.consecutive_failures += 1
        self.last_error = f"{type(error).__name__}: {error}"
        if self.consecutive_failures >= self.unhealthy_after and not self.hung:
            self._set(
                False,
                f"{self.consecutive_failures} consecutive batches failed; last: {self.last_error}",
            )

    def inference_hung(self, timeout_s: float) -> None:
        self.hung = True
        self.counters["hangs"] += 1
        self._set(False, f"an inference call has not returned after {timeout_s:g}s")

    def inference_returned(self, error: BaseException | None) -> None:
        self.hung = False
        if self.consecutive_failures < self.unhealthy_after:
            self._set(True, "")
        else:
            self._set(
                False,
                f"{self.consecutive_failures} consecutive batches failed; last: {self.last_error}",
            )

    # -- state and recovery --------------------------------------------------------------------

    def _set(self, healthy: bool, reason: str) -> None:
        changed = healthy != self.healthy
        self.healthy, self.reason = healthy, reason
        if not changed:
            return
        if healthy:
            self.counters["recoveries"] += 1
            log.warning("backend healthy again: health SERVING")
        else:
            log.error("backend unhealthy (%s): health NOT_SERVING until it recovers", reason)
            self._ensure_probe()
        if self.on_change is not None:
            try:
                self.on_change(healthy, reason)
            except Exception:
                log.exception("the health on_change callback raised; ignored")

    def _ensure_probe(self) -> None:
        if self._closed or self._batcher is None or not self._probe_items:
            return
        if self._probe_task is None or self._probe_task.done():
            self._probe_task = asyncio.get_running_loop().create_task(
                self._probe_loop(), name="health-probe"
            )

    async def _probe_loop(self) -> None:
        delay = self.probe_interval_s
        while not self.healthy and not self._closed:
            await asyncio.sleep(delay)
            if self.healthy or self._closed:
                return
            delay = min(delay * 2, self.max_probe_interval_s)
            if self.hung:
                continue  # nothing can run until the stuck call returns
            await self._probe_once()

    async def _probe_once(self) -> bool:
        """Scores the probe items through the batcher; a success resets health through
        ``batch_finished``. False (and a debug log) when it failed."""
        batcher = self._batcher
        assert batcher is not None
        self.counters["probes"] += 1
        deadline = time.monotonic() + self._probe_timeout_s
        try:
            await asyncio.gather(
                *(
                    batcher.submit(item, deadline=deadline, priority=PROBE_PRIORITY)
                    for item in self._probe_items
                )
            )
        except Exception as exc:
            log.info("recovery probe failed: %s: %s", type(exc).__name__, exc)
            return False
        log.info("recovery probe succeeded")
        return True
