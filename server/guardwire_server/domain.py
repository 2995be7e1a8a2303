"""Transport-neutral domain types. Plain frozen dataclasses: no grpc, no torch, no *_pb2."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field

__all__ = [
    "Category",
    "CategoryScore",
    "Conversation",
    "Policy",
    "Role",
    "Timings",
    "Turn",
    "Verdict",
    "VerdictLabel",
]


class Role(enum.Enum):
    USER = "user"
    ASSISTANT = "assistant"


@dataclass(frozen=True, slots=True)
class Turn:
    role: Role
    content: str  # already stripped, never empty


@dataclass(frozen=True, slots=True)
class Conversation:
    """A valid conversation: starts with a user turn, roles alternate, no empty turns."""

    turns: tuple[Turn, ...]

    @property
    def last_role(self) -> Role:
        return self.turns[-1].role


@dataclass(frozen=True, slots=True)
class Category:
    code: str
    name: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class Policy:
    """The categories shown to the model, in order, with their original codes."""

    categories: tuple[Category, ...]
    name: str = ""  # the configured policy id, "" for the default or an ad-hoc policy

    @property
    def policy_hash(self) -> str:
        """Stable id of what the model sees: hash of codes, names and descriptions."""
        h = hashlib.sha256()
        for c in self.categories:
            h.update(f"{c.code}\x1f{c.name}\x1f{c.description}\x1e".encode())
        return "p-" + h.hexdigest()[:16]

    def by_code(self) -> dict[str, Category]:
        return {c.code: c for c in self.categories}


class VerdictLabel(enum.Enum):
    SAFE = "safe"
    UNSAFE = "unsafe"


@dataclass(frozen=True, slots=True)
class CategoryScore:
    code: str
    name: str
    score: float


@dataclass(frozen=True, slots=True)
class Timings:
    queue_s: float = 0.0
    inference_s: float = 0.0
    batch_size: int = 0
    computed_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    label: VerdictLabel
    unsafe_score: float
    threshold: float
    violated: tuple[CategoryScore, ...]
    category_scores: tuple[CategoryScore, ...]
    verdict_token_mass: float
    assessed_role: Role
    policy_id: str
    timings: Timings = field(default_factory=Timings)
    truncated_turns: int = 0  # oldest turns dropped by truncate=drop_oldest_turns
