"""Edge validation: proto request in, ``Valid*`` domain objects out, or ``InvalidRequest``.

Validation happens once here; the layers below trust the types. Every message names the field
(as a proto path), the rule, and where useful the given value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from guardwire.v1 import conversation_pb2, guard_service_pb2
from guardwire_server.config import RequestLimits
from guardwire_server.domain import Category, Conversation, Policy, Role, Turn
from guardwire_server.errors import (
    FieldViolation,
    InvalidRequest,
    LimitExceeded,
    UnknownPolicy,
    quote,
)
from guardwire_server.sanitize import neutralize

__all__ = [
    "PolicyCatalog",
    "ValidClassifyRequest",
    "check_counts",
    "validate_classify",
    "validate_conversation",
    "validate_policy",
    "validate_threshold",
]

_CODE_RE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
MAX_NAME_CHARS = 256
MAX_DESCRIPTION_CHARS = 4096

_ROLE_NAMES = {v.number: v.name for v in conversation_pb2.Role.DESCRIPTOR.values}


@dataclass(frozen=True, slots=True)
class PolicyCatalog:
    """The policies a request can name: the model's default taxonomy plus named ones."""

    default: Policy
    named: Mapping[str, Policy]


@dataclass(frozen=True, slots=True)
class ValidClassifyRequest:
    conversation: Conversation  # already cut after the assessed turn
    policy: Policy
    threshold: float | None  # None: the server's default (or its calibrated thresholds)
    include_category_scores: bool


def _role_name(number: int) -> str:
    return _ROLE_NAMES.get(number, f"unknown role {number}")


def check_counts(
    conversation: conversation_pb2.Conversation,
    policy: conversation_pb2.Policy,
    limits: RequestLimits,
    conversation_field: str = "conversation",
) -> None:
    """Every repeated field of a request against its count limit, before any per-element work
    (``LimitExceeded``): a million-element list is refused in O(1), not walked."""
    counts = (
        (f"{conversation_field}.turns", "max_turns", limits.max_turns, len(conversation.turns)),
        ("policy.categories", "max_categories", limits.max_categories, len(policy.categories)),
        # only codes of the policy can be excluded: max_categories bounds a custom policy, the
        # built-in taxonomies have fewer codes (a named policy over max_categories codes cannot
        # exclude more than max_categories of them)
        ("policy.excluded_codes", "max_categories", limits.max_categories,
         len(policy.excluded_codes)),
    )  # fmt: skip
    for field, limit_name, limit, value in counts:
        if value > limit:
            raise LimitExceeded(field, limit_name, limit, value)


def validate_conversation(
    msg: conversation_pb2.Conversation,
    limits: RequestLimits,
    field: str = "conversation",
    *,
    allow_empty: bool = False,
) -> tuple[Conversation, list[FieldViolation]]:
    """Checks a conversation; returns it with the violations found (raises on limits).
    The caller has checked the counts (``check_counts``)."""
    violations: list[FieldViolation] = []
    turns_field = f"{field}.turns"
    total_bytes = sum(len(t.content.encode("utf-8")) for t in msg.turns)
    if total_bytes > limits.max_conversation_bytes:
        raise LimitExceeded(
            turns_field, "max_conversation_bytes", limits.max_conversation_bytes, total_bytes
        )
    if not msg.turns and not allow_empty:
        violations.append(FieldViolation(turns_field, "must contain at least one turn"))
    turns: list[Turn] = []
    previous: int | None = None
    for i, t in enumerate(msg.turns):
        where = f"{turns_field}[{i}]"
        if t.role == conversation_pb2.ROLE_SYSTEM:
            violations.append(
                FieldViolation(
                    f"{where}.role",
                    "ROLE_SYSTEM is not supported by Llama Guard prompts; fold the system text "
                    "into the first user turn or drop it",
                )
            )
            continue
        if t.role not in (conversation_pb2.ROLE_USER, conversation_pb2.ROLE_ASSISTANT):
            violations.append(
                FieldViolation(
                    f"{where}.role",
                    f"must be ROLE_USER or ROLE_ASSISTANT, got {_role_name(t.role)}",
                )
            )
            continue
        expected = (
            conversation_pb2.ROLE_USER
            if previous in (None, conversation_pb2.ROLE_ASSISTANT)
            else conversation_pb2.ROLE_ASSISTANT
        )
        if t.role != expected:
            violations.append(
                FieldViolation(
                    f"{where}.role",
                    "roles must alternate ROLE_USER/ROLE_ASSISTANT starting with ROLE_USER; "
                    f"expected {_role_name(expected)}, got {_role_name(t.role)}",
                )
            )
        previous = t.role
        content = t.content.strip()
        if not content:
            violations.append(FieldViolation(f"{where}.content", "must not be empty or blank"))
        role = Role.USER if t.role == conversation_pb2.ROLE_USER else Role.ASSISTANT
        turns.append(Turn(role=role, content=neutralize(content)))  # guardwire_server.sanitize
    return Conversation(turns=tuple(turns)), violations


def validate_policy(
    msg: conversation_pb2.Policy,
    catalog: PolicyCatalog,
    limits: RequestLimits,
    violations: list[FieldViolation],
) -> Policy:
    if msg.policy_id and msg.categories:
        violations.append(
            FieldViolation("policy.policy_id", "cannot be combined with policy.categories")
        )
        return catalog.default
    if msg.policy_id:
        if msg.policy_id not in catalog.named:
            raise UnknownPolicy(msg.policy_id, sorted(catalog.named))
        base = catalog.named[msg.policy_id]
    elif msg.categories:
        seen: set[str] = set()
        cats: list[Category] = []
        for i, c in enumerate(msg.categories):
            where = f"policy.categories[{i}]"
            if not _CODE_RE.match(c.code):
                violations.append(
                    FieldViolation(f"{where}.code", "must be 1-16 characters of [A-Za-z0-9_-]")
                )
            elif c.code in seen:
                violations.append(FieldViolation(f"{where}.code", f"duplicate code {c.code!r}"))
            seen.add(c.code)
            name = c.name.strip()
            if not name:
                violations.append(FieldViolation(f"{where}.name", "must not be empty"))
            elif len(name) > MAX_NAME_CHARS or "\n" in name:
                violations.append(
                    FieldViolation(
                        f"{where}.name", f"must be one line of at most {MAX_NAME_CHARS} characters"
                    )
                )
            if len(c.description) > MAX_DESCRIPTION_CHARS:
                violations.append(
                    FieldViolation(
                        f"{where}.description",
                        f"must be at most {MAX_DESCRIPTION_CHARS} characters",
                    )
                )
            cats.append(
                Category(
                    code=c.code,
                    name=neutralize(name),
                    description=neutralize(c.description.strip()),
                )
            )
        base = Policy(categories=tuple(cats))
    else:
        base = catalog.default
    if not msg.excluded_codes:
        return base
    known = {c.code for c in base.categories}
    excluded = set()
    for i, code in enumerate(msg.excluded_codes):
        if code not in known:
            violations.append(
                FieldViolation(
                    f"policy.excluded_codes[{i}]",
                    f"{quote(code)} is not a code of the policy "
                    f"(codes: {', '.join(sorted(known))})",
                )
            )
        excluded.add(code)
    remaining = tuple(c for c in base.categories if c.code not in excluded)
    if not remaining:
        violations.append(
            FieldViolation("policy.excluded_codes", "excludes every category; keep at least one")
        )
        return base
    return Policy(categories=remaining, name=base.name)


def _cut_to_role(
    conversation: Conversation, role_number: int, violations: list[FieldViolation]
) -> tuple[Conversation, Role | None]:
    if role_number == conversation_pb2.ROLE_UNSPECIFIED or not conversation.turns:
        return conversation, None
    if role_number not in (conversation_pb2.ROLE_USER, conversation_pb2.ROLE_ASSISTANT):
        violations.append(
            FieldViolation(
                "role", f"must be ROLE_USER, ROLE_ASSISTANT or unset, got {_role_name(role_number)}"
            )
        )
        return conversation, None
    role = Role.USER if role_number == conversation_pb2.ROLE_USER else Role.ASSISTANT
    for end in range(len(conversation.turns), 0, -1):
        if conversation.turns[end - 1].role is role:
            return Conversation(turns=conversation.turns[:end]), role
    violations.append(
        FieldViolation("role", f"the conversation has no turn of role {_role_name(role_number)}")
    )
    return conversation, None


def validate_threshold(
    options: guard_service_pb2.ClassifyOptions, violations: list[FieldViolation]
) -> float | None:
    """The request's threshold, or None for the server's default."""
    if not options.HasField("threshold"):
        return None
    t = options.threshold
    if not (math.isfinite(t) and 0.0 < t <= 1.0):
        violations.append(FieldViolation("options.threshold", f"must be in (0, 1], got {t}"))
        return None
    return t


def validate_classify(
    msg: guard_service_pb2.ClassifyRequest,
    catalog: PolicyCatalog,
    limits: RequestLimits,
) -> ValidClassifyRequest:
    check_counts(msg.conversation, msg.policy, limits)
    conversation, violations = validate_conversation(msg.conversation, limits)
    if not violations:
        conversation, _ = _cut_to_role(conversation, msg.role, violations)
    policy = validate_policy(msg.policy, catalog, limits, violations)
    threshold = validate_threshold(msg.options, violations)
    if violations:
        raise InvalidRequest(violations)
    return ValidClassifyRequest(
        conversation=conversation,
        policy=policy,
        threshold=threshold,
        include_category_scores=msg.options.include_category_scores,
    )
