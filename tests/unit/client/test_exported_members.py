"""The client's public surface is pinned: ``guardwire.__all__`` lists every public name the
package exports, sorted, and nothing else (as httpx's ``test_exported_members`` does)."""

import guardwire

EXPECTED = [
    "DEFAULT_TIMEOUT_S",
    "AsyncGuardClient",
    "CategoryScore",
    "ClassifyResult",
    "ConversationInput",
    "DeadlineError",
    "FailMode",
    "FieldViolation",
    "GenerationBlocked",
    "GuardClient",
    "GuardError",
    "GuardStream",
    "GuardStreamContext",
    "InvalidRequestError",
    "NotFoundError",
    "Outcome",
    "OutcomeKind",
    "OverloadedError",
    "RetryPolicy",
    "ServerError",
    "StreamVerdict",
    "UnavailableCounter",
    "UnavailableError",
    "guard_generation",
]


def test_all_is_pinned() -> None:
    assert guardwire.__all__ == EXPECTED


def test_all_names_exist_and_every_public_attribute_is_listed() -> None:
    public = {n for n in dir(guardwire) if not n.startswith("_")}
    modules = {"client", "errors", "messages", "outcome", "streaming", "v1"}
    assert set(guardwire.__all__) <= public
    assert public - modules == set(guardwire.__all__)
