"""Domain → proto conversions for responses (requests are parsed in
``guardwire_server.validation``)."""

from __future__ import annotations

from google.protobuf import duration_pb2

from guardwire.v1 import conversation_pb2, guard_service_pb2, verdict_pb2
from guardwire_server.domain import Category, CategoryScore, Policy, Role, Verdict, VerdictLabel

__all__ = ["category_to_proto", "duration", "verdict_to_proto"]

_ROLE = {Role.USER: conversation_pb2.ROLE_USER, Role.ASSISTANT: conversation_pb2.ROLE_ASSISTANT}
_LABEL = {
    VerdictLabel.SAFE: verdict_pb2.VERDICT_SAFE,
    VerdictLabel.UNSAFE: verdict_pb2.VERDICT_UNSAFE,
}


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(max(0, int(seconds * 1e9)))
    return d


def _score(c: CategoryScore) -> verdict_pb2.CategoryScore:
    return verdict_pb2.CategoryScore(code=c.code, name=c.name, score=c.score)


def category_to_proto(c: Category) -> conversation_pb2.Category:
    return conversation_pb2.Category(code=c.code, name=c.name, description=c.description)


def policy_to_categories(p: Policy) -> list[conversation_pb2.Category]:
    return [category_to_proto(c) for c in p.categories]


def verdict_to_proto(
    v: Verdict, *, model_id: str, include_category_scores: bool, total_s: float
) -> guard_service_pb2.ClassifyResponse:
    t = v.timings
    return guard_service_pb2.ClassifyResponse(
        verdict=_LABEL[v.label],
        unsafe_score=v.unsafe_score,
        threshold=v.threshold,
        categories=[_score(c) for c in v.violated],
        category_scores=[_score(c) for c in v.category_scores] if include_category_scores else [],
        assessed_role=_ROLE[v.assessed_role],
        policy_id=v.policy_id,
        model_id=model_id,
        verdict_token_mass=v.verdict_token_mass,
        truncated_turns=v.truncated_turns,
        timings=verdict_pb2.Timings(
            queue=duration(t.queue_s),
            inference=duration(t.inference_s),
            total=duration(total_s),
            batch_size=t.batch_size,
            computed_tokens=t.computed_tokens,
            cached_tokens=t.cached_tokens,
        ),
    )
