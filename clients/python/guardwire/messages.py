"""Plain-Python request and result types of the client, and their protobuf mapping."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from guardwire.errors import GuardError
from guardwire.v1 import conversation_pb2, guard_service_pb2, verdict_pb2

__all__ = [
    "CategoryScore",
    "ClassifyResult",
    "ConversationInput",
    "build_classify_request",
    "parse_classify_response",
]

ConversationInput = str | Sequence[tuple[str, str]] | Sequence[Mapping[str, str]]

_ROLES = {
    "user": conversation_pb2.ROLE_USER,
    "assistant": conversation_pb2.ROLE_ASSISTANT,
    "agent": conversation_pb2.ROLE_ASSISTANT,
    "system": conversation_pb2.ROLE_SYSTEM,
}
_ROLE_NAMES = {conversation_pb2.ROLE_USER: "user", conversation_pb2.ROLE_ASSISTANT: "assistant"}


@dataclass(frozen=True)
class CategoryScore:
    code: str
    name: str
    score: float


@dataclass(frozen=True)
class ClassifyResult:
    verdict: str  # "safe" | "unsafe"
    unsafe_score: float
    threshold: float
    categories: list[CategoryScore]  # violated
    category_scores: list[CategoryScore]  # all, when requested
    assessed_role: str
    policy_id: str
    model_id: str
    verdict_token_mass: float
    queue_s: float
    inference_s: float
    total_s: float
    batch_size: int
    truncated_turns: int = 0  # oldest turns the server dropped (truncate: drop_oldest_turns)

    @property
    def unsafe(self) -> bool:
        return self.verdict == "unsafe"


def _role(name: str) -> int:
    try:
        return _ROLES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown role {name!r}; use 'user' or 'assistant'") from None


def build_classify_request(
    conversation: ConversationInput,
    *,
    role: str | None = None,
    threshold: float | None = None,
    include_category_scores: bool = False,
    excluded_codes: Sequence[str] = (),
    categories: Sequence[tuple[str, str, str]] | None = None,
    policy_id: str | None = None,
) -> guard_service_pb2.ClassifyRequest:
    """A plain string is one user turn; otherwise (role, text) pairs or {"role", "content"}."""
    if isinstance(conversation, str):
        turns = [conversation_pb2.Turn(role=conversation_pb2.ROLE_USER, content=conversation)]
    else:
        turns = []
        for t in conversation:
            if isinstance(t, Mapping):
                r, text = t["role"], t["content"]
            else:
                r, text = t
            turns.append(conversation_pb2.Turn(role=_role(r), content=text))
    policy = conversation_pb2.Policy(
        excluded_codes=list(excluded_codes),
        policy_id=policy_id or "",
        categories=[
            conversation_pb2.Category(code=c, name=n, description=d)
            for c, n, d in (categories or ())
        ],
    )
    options = guard_service_pb2.ClassifyOptions(include_category_scores=include_category_scores)
    if threshold is not None:
        options.threshold = threshold
    return guard_service_pb2.ClassifyRequest(
        conversation=conversation_pb2.Conversation(turns=turns),
        role=_role(role) if role else conversation_pb2.ROLE_UNSPECIFIED,
        policy=policy,
        options=options,
    )


def _scores(items: Any) -> list[CategoryScore]:
    return [CategoryScore(c.code, c.name, c.score) for c in items]


def parse_classify_response(r: guard_service_pb2.ClassifyResponse) -> ClassifyResult:
    if r.verdict == verdict_pb2.VERDICT_UNSPECIFIED:
        raise GuardError(grpc.StatusCode.INTERNAL, "server sent VERDICT_UNSPECIFIED", "")
    return ClassifyResult(
        verdict="unsafe" if r.verdict == verdict_pb2.VERDICT_UNSAFE else "safe",
        unsafe_score=r.unsafe_score,
        threshold=r.threshold,
        categories=_scores(r.categories),
        category_scores=_scores(r.category_scores),
        assessed_role=_ROLE_NAMES.get(r.assessed_role, "unspecified"),
        policy_id=r.policy_id,
        model_id=r.model_id,
        verdict_token_mass=r.verdict_token_mass,
        queue_s=r.timings.queue.ToNanoseconds() / 1e9,
        inference_s=r.timings.inference.ToNanoseconds() / 1e9,
        total_s=r.timings.total.ToNanoseconds() / 1e9,
        batch_size=r.timings.batch_size,
        truncated_turns=r.truncated_turns,
    )
