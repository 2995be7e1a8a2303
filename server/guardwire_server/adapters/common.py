"""Small helpers shared by the adapters: a thread-safe memo, a stable softmax, segment text."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Generic, TypeVar

from guardwire_server.adapters.tokenization import Segment, Special

__all__ = ["BODY_CACHE_MARGIN", "Cache", "common_prefix", "segments_text", "softmax", "split_body"]

K = TypeVar("K")
V = TypeVar("V")

CACHE_MAX = 1024
# conversation tokens kept out of a stream check's cacheable prefix: the end of a growing text
# may re-tokenize when more arrives (a word completed, the turn's closing "\n\n" merged)
BODY_CACHE_MARGIN = 4


class Cache(Generic[K, V]):
    """A small thread-safe memo (per policy/role work is repeated on every request)."""

    def __init__(self, max_entries: int = CACHE_MAX) -> None:
        self._data: dict[K, V] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            if len(self._data) >= self._max:
                self._data.clear()
            self._data[key] = value


def segments_text(segments: Sequence[Segment]) -> str:
    """The text of segments, special tokens written by their string form."""
    return "".join(s.token if isinstance(s, Special) else s for s in segments)


def softmax(logits: Sequence[float]) -> list[float]:
    """Numerically stable softmax; rejects NaN/+inf and all -inf (a broken backend)."""
    if not logits or any(math.isnan(x) or x == math.inf for x in logits):
        raise ValueError(f"invalid logits {tuple(logits)!r}")
    top = max(logits)
    if top == -math.inf:
        raise ValueError("all logits are -inf")
    exps = [math.exp(x - top) for x in logits]
    total = math.fsum(exps)
    return [e / total for e in exps]


def common_prefix(seqs: Sequence[Sequence[int]]) -> list[int]:
    out: list[int] = []
    for column in zip(*seqs, strict=False):
        if any(t != column[0] for t in column):
            break
        out.append(column[0])
    return out


def split_body(
    prefix: Sequence[int],
    text_ids: Sequence[int],
    suffix_len: int,
    margin: int = BODY_CACHE_MARGIN,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Move the conversation tokens at the start of ``text_ids`` (body then ``suffix_len``
    instruction tokens), except the last ``margin``, into the cacheable ``prefix``; returns
    (prefix, rest of text_ids). The concatenation ``prefix + text_ids`` is unchanged."""
    cut = max(0, len(text_ids) - max(0, suffix_len) - max(0, margin))
    return (*prefix, *text_ids[:cut]), tuple(text_ids[cut:])
