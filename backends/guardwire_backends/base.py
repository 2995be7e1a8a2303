"""The backend interface: score token sequences at chosen positions.

A backend knows tensors and devices, not prompts or gRPC. The adapter turns a conversation into
token ids split as ``prefix`` (identical for every request of a policy, cacheable) and ``tail``
(conversation + instructions + forced answer tokens + category probe), and says at which tail
positions it needs the logits of which tokens. The backend returns exactly those logits, plus the
log-sum-exp over the full vocabulary where asked (the format-drift diagnostic).

Exceptions::

    BackendError
     ├── WeightsNotFound   the model reference does not resolve to weights
     ├── BackendStartError the model could not be loaded / warmed up / failed its probe
     ├── InferenceError    a forward pass failed (the whole batch fails)
     └── BackendUnhealthy  the backend should not be sent more work
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "Backend",
    "BackendError",
    "BackendInfo",
    "BackendStartError",
    "BackendUnhealthy",
    "Capabilities",
    "InferenceError",
    "Readout",
    "ReadoutResult",
    "ScoreItem",
    "ScoreResult",
    "WeightsNotFound",
]


class BackendError(Exception):
    """Base of every backend failure."""


class WeightsNotFound(BackendError):
    pass


class BackendStartError(BackendError):
    pass


class InferenceError(BackendError):
    pass


class BackendUnhealthy(BackendError):
    pass


@dataclass(frozen=True, slots=True)
class Readout:
    """Logits wanted at one tail position.

    ``position`` indexes ``ScoreItem.tail_ids`` (negative values count from the end): the logits
    are those predicting the token *after* that position.
    """

    position: int
    token_ids: tuple[int, ...]
    with_logsumexp: bool = False


@dataclass(frozen=True, slots=True)
class ScoreItem:
    prefix_ids: tuple[int, ...]
    tail_ids: tuple[int, ...]
    readouts: tuple[Readout, ...]

    @property
    def num_tokens(self) -> int:
        return len(self.prefix_ids) + len(self.tail_ids)


@dataclass(frozen=True, slots=True)
class ReadoutResult:
    logits: tuple[float, ...]  # aligned with Readout.token_ids
    logsumexp: float | None  # over the full vocabulary, when asked


@dataclass(frozen=True, slots=True)
class ScoreResult:
    readouts: tuple[ReadoutResult, ...]
    computed_tokens: int  # tokens this item put through the model
    cached_tokens: int  # prefix tokens served from the prefix cache


@dataclass(frozen=True, slots=True)
class Capabilities:
    prefix_cache: bool
    is_padded: bool  # batch cost = longest item x batch size
    max_batch_size: int
    max_batch_tokens: int


@dataclass(frozen=True, slots=True)
class BackendInfo:
    name: str
    model_ref: str
    revision: str
    device: str
    dtype: str
    vocab_size: int


@runtime_checkable
class Backend(Protocol):
    """Synchronous: the server calls ``score`` from one worker thread, never concurrently."""

    @property
    def info(self) -> BackendInfo: ...

    @property
    def capabilities(self) -> Capabilities: ...

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]: ...

    def warmup(self, items: Sequence[ScoreItem]) -> None: ...

    def close(self) -> None: ...
