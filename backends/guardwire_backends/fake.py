"""A deterministic backend without torch, for server, batcher and fault tests.

Logits are a hash of (seed, prefix, tail up to the readout position, token id), so they are
reproducible, independent of batching and causal (a readout depends only on the tokens at or
before its position, like a real model). The vocabulary has three tiers so the full-vocabulary
log-sum-exp is exact and cheap: the verdict tokens (high), a set of "hot" tokens (the Llama Guard 3
line-2 tokens by default, medium) and every other token (one constant low logit). With the
defaults, most of the mass sits on safe/unsafe, so a server's load probe passes.

Knobs for tests: ``unsafe_trigger`` (a token-id sequence; when it occurs in the tail up to the
readout, the unsafe logit gets ``trigger_boost``), ``fail_when`` (a token id, or a callable on
the batch, that makes the whole batch raise ``InferenceError``) and ``delay_s`` (sleep per batch).

The pure-python item helpers at the bottom (position resolution, validation, prefix grouping,
token accounting) are shared with :mod:`guardwire_backends.torch_hf` so both backends agree exactly.
"""

from __future__ import annotations

import hashlib
import math
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from guardwire_backends.base import (
    BackendInfo,
    BackendUnhealthy,
    Capabilities,
    InferenceError,
    ReadoutResult,
    ScoreItem,
    ScoreResult,
)

__all__ = [
    "LG3_HOT_IDS",
    "LG3_SAFE_ID",
    "LG3_UNSAFE_ID",
    "FakeBackend",
    "group_by_prefix",
    "resolve_positions",
    "token_accounting",
]

LG3_SAFE_ID = 19193
LG3_UNSAFE_ID = 39257
# "\n", "S", "1".."9", "10".."14", ",S", ",", "<|eot_id|>", "\n\n" (llamaguard-facts.md §2.3)
LG3_HOT_IDS: tuple[int, ...] = (
    198,
    50,
    *range(16, 25),
    605,
    806,
    717,
    1032,
    975,
    21861,
    11,
    128009,
    271,
)

FailWhen = Callable[[Sequence[ScoreItem]], bool] | int | None


class FakeBackend:
    """Deterministic stand-in for a model backend (see the module docstring)."""

    def __init__(
        self,
        model_ref: str = "fake",
        *,
        vocab_size: int = 128256,
        safe_id: int = LG3_SAFE_ID,
        unsafe_id: int = LG3_UNSAFE_ID,
        hot_ids: Sequence[int] = LG3_HOT_IDS,
        unsafe_trigger: Sequence[int] | None = None,
        trigger_boost: float = 20.0,
        verdict_level: float = 10.0,
        spread: float = 3.0,
        cold_logit: float = -12.0,
        delay_s: float = 0.0,
        fail_when: FailWhen = None,
        seed: int = 0,
        prefix_cache: bool = True,
        prefix_cache_entries: int = 1024,
        max_batch_size: int = 16,
        max_batch_tokens: int = 8192,
        is_padded: bool = True,
    ) -> None:
        if unsafe_trigger is not None and len(unsafe_trigger) == 0:
            raise ValueError("unsafe_trigger must be a non-empty token-id sequence or None")
        if not (0 <= safe_id < vocab_size and 0 <= unsafe_id < vocab_size) or safe_id == unsafe_id:
            raise ValueError("safe_id and unsafe_id must be distinct ids inside vocab_size")
        self._verdict = (safe_id, unsafe_id)
        # hot ids outside a small test vocabulary are dropped rather than rejected
        self._hot = frozenset(t for t in hot_ids if 0 <= t < vocab_size) - {safe_id, unsafe_id}
        self._cold_count = vocab_size - len(self._hot) - 2
        self._trigger = tuple(unsafe_trigger) if unsafe_trigger else None
        self._trigger_boost = trigger_boost
        self._verdict_level = verdict_level
        self._spread = spread
        self._cold_logit = cold_logit
        self.delay_s = delay_s
        self.fail_when: FailWhen = fail_when
        self._key = struct.pack("<q", seed)
        self._cache_on = prefix_cache
        self._cache_entries = prefix_cache_entries
        self._seen: OrderedDict[tuple[int, ...], None] = OrderedDict()
        self._closed = False
        self._lock = threading.Lock()
        self.batch_sizes: list[int] = []  # one entry per score() call, for batcher tests
        self.cache_clears = 0  # clear_caches() calls, for fault tests
        self._info = BackendInfo(
            name="fake",
            model_ref=model_ref,
            revision="fake",
            device="cpu",
            dtype="float32",
            vocab_size=vocab_size,
        )
        self._caps = Capabilities(
            prefix_cache=prefix_cache,
            is_padded=is_padded,
            max_batch_size=max_batch_size,
            max_batch_tokens=max_batch_tokens,
        )

    @property
    def info(self) -> BackendInfo:
        return self._info

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        if self._closed:
            raise BackendUnhealthy("backend is closed")
        positions = resolve_positions(items, self._info.vocab_size)
        with self._lock:
            self.batch_sizes.append(len(items))
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        self._maybe_fail(items)
        groups = group_by_prefix(items)
        cached = {p for p in groups if self._lookup(p)}
        tokens = token_accounting(items, groups, cached)
        results: list[ScoreResult] = []
        for i, item in enumerate(items):
            readouts = tuple(
                self._readout(item, pos, r.token_ids, r.with_logsumexp)
                for pos, r in zip(positions[i], item.readouts, strict=True)
            )
            results.append(ScoreResult(readouts, *tokens[i]))
        return results

    def warmup(self, items: Sequence[ScoreItem]) -> None:
        self.score(items)

    def close(self) -> None:
        self._closed = True
        self._seen.clear()

    def clear_caches(self) -> None:
        """Forget the emulated prefix cache (the server calls this after out-of-memory)."""
        with self._lock:
            self._seen.clear()
            self.cache_clears += 1

    # -- internals -----------------------------------------------------------------------------

    def _maybe_fail(self, items: Sequence[ScoreItem]) -> None:
        fail = self.fail_when
        if fail is None:
            return
        if isinstance(fail, int):
            if any(fail in it.tail_ids or fail in it.prefix_ids for it in items):
                raise InferenceError(f"injected failure: token {fail} in batch")
        elif fail(items):
            raise InferenceError("injected failure: fail_when(batch) is true")

    def _lookup(self, prefix: tuple[int, ...]) -> bool:
        """Emulate a prefix cache: True when this prefix was seen by an earlier call."""
        if not self._cache_on or not prefix:
            return False
        with self._lock:
            hit = prefix in self._seen
            self._seen[prefix] = None
            self._seen.move_to_end(prefix)
            while len(self._seen) > self._cache_entries:
                self._seen.popitem(last=False)
        return hit

    def _readout(
        self, item: ScoreItem, pos: int, token_ids: tuple[int, ...], with_lse: bool
    ) -> ReadoutResult:
        seen = item.tail_ids[: pos + 1]
        h = hashlib.blake2b(self._key, digest_size=16)
        h.update(_pack(item.prefix_ids))
        h.update(b"|")
        h.update(_pack(seen))
        base = h.digest()
        boost = self._trigger_boost if self._trigger and _contains(seen, self._trigger) else 0.0

        def logit(tok: int) -> float:
            if tok in self._verdict:
                value = self._verdict_level + self._spread * _uniform(base, tok)
                return value + boost if tok == self._verdict[1] else value
            if tok in self._hot:
                return self._spread * _uniform(base, tok)
            return self._cold_logit

        logits = tuple(logit(t) for t in token_ids)
        lse = None
        if with_lse:
            warm = [logit(t) for t in (*self._verdict, *self._hot)]
            if self._cold_count:
                warm.append(self._cold_logit + math.log(self._cold_count))
            top = max(warm)
            lse = top + math.log(sum(math.exp(v - top) for v in warm))
        return ReadoutResult(logits=logits, logsumexp=lse)


def _pack(ids: Sequence[int]) -> bytes:
    return struct.pack(f"<{len(ids)}q", *ids)


def _uniform(base: bytes, tok: int) -> float:
    """Deterministic value in [-1, 1) from (base digest, token id)."""
    d = hashlib.blake2b(base + struct.pack("<q", tok), digest_size=8).digest()
    return int.from_bytes(d, "little") / 2**63 - 1.0


def _contains(seq: Sequence[int], sub: Sequence[int]) -> bool:
    n = len(sub)
    return any(tuple(seq[i : i + n]) == tuple(sub) for i in range(len(seq) - n + 1))


# -- item helpers shared by the backends -------------------------------------------------------


def resolve_positions(items: Sequence[ScoreItem], vocab_size: int) -> list[tuple[int, ...]]:
    """Check every item and return its readout positions as non-negative tail indexes.

    Raises ValueError on an empty tail, a position outside the tail or a token id outside the
    vocabulary: these are adapter bugs, caught before any compute is spent.
    """
    out: list[tuple[int, ...]] = []
    for n, item in enumerate(items):
        t = len(item.tail_ids)
        if t == 0:
            raise ValueError(f"item {n}: empty tail (a readout needs at least one tail token)")
        positions = []
        for r in item.readouts:
            p = r.position + t if r.position < 0 else r.position
            if not 0 <= p < t:
                raise ValueError(f"item {n}: readout position {r.position} outside tail of {t}")
            if any(not 0 <= tok < vocab_size for tok in r.token_ids):
                raise ValueError(f"item {n}: readout token id outside vocabulary of {vocab_size}")
            positions.append(p)
        out.append(tuple(positions))
    return out


def group_by_prefix(items: Sequence[ScoreItem]) -> dict[tuple[int, ...], list[int]]:
    """Item indexes per distinct prefix, in first-seen order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(tuple(item.prefix_ids), []).append(i)
    return groups


def token_accounting(
    items: Sequence[ScoreItem],
    groups: dict[tuple[int, ...], list[int]],
    cached: set[tuple[int, ...]],
) -> list[tuple[int, int]]:
    """(computed_tokens, cached_tokens) per item.

    Every item computes its tail. A prefix that was not in the cache is computed once per call
    and charged to the first item of its group; the group's other items, and every item whose
    prefix came from the cache, count the prefix as cached. So ``computed + cached ==
    num_tokens`` for each item and the sum of ``computed`` is the real (unpadded) work done.
    """
    out = [(len(it.tail_ids), 0) for it in items]
    for prefix, idxs in groups.items():
        p = len(prefix)
        if not p:
            continue
        for k, i in enumerate(idxs):
            t = len(items[i].tail_ids)
            out[i] = (t + p, 0) if k == 0 and prefix not in cached else (t, p)
    return out
