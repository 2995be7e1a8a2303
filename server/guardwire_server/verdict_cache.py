"""Verdict cache: identical requests within a TTL are answered without inference.

A guard's answer for identical input is deterministic: the same model revision and prompt format,
the same policy and the same conversation give the same logits. Retried turns, repeated prompts
and agents that re-check an unchanged history are common, so ``Guard.score`` asks this cache first.

* **Key.** HMAC-SHA256 (per-cache random key) of a canonical, length-prefixed encoding of the
  model namespace (model id, revision, family, backend, device, dtype, template hash), the policy
  id (configured name + hash of the categories the model sees), the assessed role and every turn
  (role + stripped text). Conversation text is never stored, in the clear or as a plain hash
  (a plain sha256 of a short prompt can be reversed by guessing; the random key makes the stored
  digests useless outside this process).
* **Value.** The *threshold-independent* scoring: the ``EncodedPrompt`` and the backend's
  ``ScoreResult``. The caller applies each request's own threshold (or the calibrated
  per-category thresholds) on every hit, so requests with different thresholds share one entry.
* **Bounds.** At most ``max_entries`` entries (least recently used evicted first); an entry
  older than ``ttl_s`` is a miss and is dropped.
* **Single flight.** While a request is being scored, identical requests wait for its result
  instead of running their own inference ("coalesced"). If that leading request fails (its
  deadline, a cancelled caller, a backend error) the waiters do not inherit the failure: one of
  them computes in its turn.
* **Visible.** A hit (or a coalesced wait) reports ``batch_size=0``, ``inference=0``,
  ``computed_tokens=0`` and every prompt token as ``cached_tokens`` in its ``Timings``; a
  coalesced request reports the time it waited as ``queue``. Counters (``hits``, ``misses``,
  ``coalesced``, ``evictions``, ``expirations``) are plain attributes for telemetry to read.

Usage::

    cache = VerdictCache(max_entries=10_000, ttl_s=60.0)
    key = cache.key(namespace, conversation, policy)
    scored, source = await cache.get_or_compute(key, compute, deadline=deadline)
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import hashlib
import hmac
import os
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from guardwire_backends.base import ScoreResult
from guardwire_server.adapters.base import EncodedPrompt, policy_id
from guardwire_server.domain import Conversation, Policy, Timings
from guardwire_server.errors import DeadlineExpired

__all__ = ["Lookup", "Scored", "VerdictCache", "canonical_encoding"]

_VERSION = b"guardwire-verdict-cache-v1"


@dataclass(frozen=True, slots=True)
class Scored:
    """A scored prompt, before any threshold is applied."""

    prompt: EncodedPrompt
    result: ScoreResult
    timings: Timings

    @property
    def prompt_tokens(self) -> int:
        return sum(item.num_tokens for item in self.prompt.items)


class Lookup(enum.Enum):
    HIT = "hit"  # answered from the cache
    COALESCED = "coalesced"  # waited for an identical in-flight request
    COMPUTED = "computed"  # scored by the backend (a miss)


def _field(data: bytes) -> bytes:
    return struct.pack(">Q", len(data)) + data


def canonical_encoding(namespace: str, conversation: Conversation, policy: Policy) -> bytes:
    """The unambiguous byte string that is hashed into a key (length-prefixed fields)."""
    parts = [
        _field(_VERSION),
        _field(namespace.encode()),
        _field(policy_id(policy).encode()),
        _field(conversation.last_role.value.encode()),
        struct.pack(">Q", len(conversation.turns)),
    ]
    for turn in conversation.turns:
        parts.append(_field(turn.role.value.encode()))
        parts.append(_field(turn.content.encode()))
    return b"".join(parts)


class VerdictCache:
    """Bounded, TTL'd LRU of scored prompts with single-flight; see the module docstring.

    ``clock`` is the time base of the TTL (injectable for tests); deadlines passed to
    :meth:`get_or_compute` are absolute ``time.monotonic()`` values, like the batcher's.
    Not thread-safe: use it from the event loop only.
    """

    def __init__(
        self,
        max_entries: int,
        ttl_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        secret: bytes | None = None,
    ) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be a positive integer, got {max_entries!r}")
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not ttl_s > 0:
            raise ValueError(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")
        self.max_entries = max_entries
        self.ttl_s = float(ttl_s)
        self._clock = clock
        self._secret = secret if secret is not None else os.urandom(32)
        self._entries: OrderedDict[bytes, tuple[float, Scored]] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Future[Scored | None]] = {}
        # counters, read by telemetry
        self.hits = 0
        self.misses = 0
        self.coalesced = 0
        self.evictions = 0
        self.expirations = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def in_flight(self) -> int:
        """Distinct keys being scored right now."""
        return len(self._inflight)

    def key(self, namespace: str, conversation: Conversation, policy: Policy) -> bytes:
        """The cache key: a keyed SHA-256 digest; the text cannot be read back from it."""
        data = canonical_encoding(namespace, conversation, policy)
        return hmac.new(self._secret, data, hashlib.sha256).digest()

    # -- the LRU -------------------------------------------------------------------------------

    def get(self, key: bytes) -> Scored | None:
        """The stored scoring of ``key`` if present and fresh (counts nothing)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, scored = entry
        if self._clock() - stored_at >= self.ttl_s:
            del self._entries[key]
            self.expirations += 1
            return None
        self._entries.move_to_end(key)
        return scored

    def put(self, key: bytes, scored: Scored) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (self._clock(), scored)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evictions += 1

    def clear(self) -> None:
        self._entries.clear()

    # -- lookup with single flight --------------------------------------------------------------

    async def get_or_compute(
        self,
        key: bytes,
        compute: Callable[[], Awaitable[Scored]],
        *,
        deadline: float | None = None,
    ) -> tuple[Scored, Lookup]:
        """The scoring of ``key``: from the cache, from an identical in-flight request, or from
        ``compute()`` (whose result is stored). Hits and coalesced answers carry hit timings.

        Raises what ``compute`` raises, or ``DeadlineExpired`` when ``deadline`` passes while
        waiting for an identical in-flight request.
        """
        started = time.monotonic()
        while True:
            scored = self.get(key)
            if scored is not None:
                self.hits += 1
                return _as_hit(scored, 0.0), Lookup.HIT
            pending = self._inflight.get(key)
            if pending is None:
                break
            value = await _wait(pending, deadline, started)
            if value is not None:
                self.coalesced += 1
                return _as_hit(value, time.monotonic() - started), Lookup.COALESCED
            # the leading request failed: do not inherit its error, compute (or follow) anew

        self.misses += 1
        future: asyncio.Future[Scored | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            scored = await compute()
            self.put(key, scored)
            future.set_result(scored)
            return scored, Lookup.COMPUTED
        finally:
            if not future.done():
                future.set_result(None)  # failed or cancelled: waiters retry on their own
            if self._inflight.get(key) is future:
                del self._inflight[key]


async def _wait(
    pending: asyncio.Future[Scored | None], deadline: float | None, started: float
) -> Scored | None:
    if deadline is None:
        return await asyncio.shield(pending)
    timeout = deadline - time.monotonic()
    try:
        if timeout <= 0:
            raise TimeoutError
        return await asyncio.wait_for(asyncio.shield(pending), timeout)
    except TimeoutError:
        waited_ms = (time.monotonic() - started) * 1e3
        raise DeadlineExpired(
            f"deadline expired after {waited_ms:.1f} ms waiting for an identical in-flight "
            "request, before inference",
            metadata={"queue_ms": f"{waited_ms:.1f}"},
        ) from None


def _as_hit(scored: Scored, waited_s: float) -> Scored:
    """Timings of an answer that cost no inference: batch size 0, every token cached."""
    timings = Timings(
        queue_s=waited_s,
        inference_s=0.0,
        batch_size=0,
        computed_tokens=0,
        cached_tokens=scored.prompt_tokens,
    )
    return dataclasses.replace(scored, timings=timings)
