"""The bound on every status, in its one place: ``guardwire_server.status.to_grpc_status``."""

from __future__ import annotations

import pytest
from google.rpc import error_details_pb2, status_pb2

from guardwire_server import errors
from guardwire_server.status import MAX_MESSAGE_BYTES, MAX_STATUS_BYTES, to_grpc_status

HUGE = "é" * 200_000  # two UTF-8 bytes a character: the cut must respect characters


def _status(err: errors.GuardwireError) -> status_pb2.Status:
    grpc_status = to_grpc_status(err)
    raw = dict(grpc_status.trailing_metadata)["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(raw)
    assert status.message == grpc_status.details
    return status


CASES = [
    errors.GuardwireError(HUGE, metadata={"k": HUGE, HUGE: "v"}),
    errors.UnknownPolicy(HUGE, [f"policy-{i}" for i in range(5000)]),
    errors.InvalidRequest([errors.FieldViolation(HUGE, HUGE) for _ in range(1000)]),
    errors.LimitExceeded(HUGE, "max_turns", 64, 10**9),
    errors.StreamProtocolError("rule", HUGE, field=HUGE),
    errors.Overloaded(HUGE, retry_after_s=0.5, queue_limit=8),
    errors.BackendFailure(HUGE),
]


@pytest.mark.parametrize("err", CASES, ids=[type(e).__name__ for e in CASES])
def test_every_status_is_bounded(err: errors.GuardwireError) -> None:
    status = _status(err)
    assert status.ByteSize() <= MAX_STATUS_BYTES
    assert len(status.message.encode()) <= MAX_MESSAGE_BYTES
    assert status.message.startswith(err.message[:10])
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == err.reason  # the reason survives


def test_invalid_request_keeps_the_first_violations_and_counts_the_rest() -> None:
    violations = [errors.FieldViolation(f"turns[{i}].role", "bad") for i in range(1000)]
    err = errors.InvalidRequest(violations)
    assert [v.field for v in err.violations] == [f"turns[{i}].role" for i in range(10)]
    assert "1000 violations" in err.message and "990 more" in err.message
    assert err.metadata["violations"] == "1000"
    bad = error_details_pb2.BadRequest()
    assert _status(err).details[1].Unpack(bad)
    assert [v.field for v in bad.field_violations] == [v.field for v in err.violations]


def test_small_statuses_are_unchanged() -> None:
    err = errors.InvalidRequest.one("conversation.turns", "must contain at least one turn")
    status = _status(err)
    assert status.message == err.message and len(status.details) == 2


def test_quote_cuts_request_text() -> None:
    assert errors.quote("S1") == "'S1'"
    assert errors.quote("x" * 1000) == repr("x" * 64) + "…"
