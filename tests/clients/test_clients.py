"""The generated clients (Go, TypeScript, Java, C++) against the real Guardwire server.

Each language's example CLI (clients/<lang>) classifies one text (SAFE) and one GW_TEST_UNSAFE
text (UNSAFE), runs one StreamClassify stream, sends an empty conversation (INVALID_ARGUMENT
decoded into the typed error) and checks a dead address (UNAVAILABLE, never SAFE); it prints
its decoded results as one ``RESULT <json>`` line, in the same shape in every language.

StreamClassify: the server may still answer UNIMPLEMENTED (it lands in another issue). The
stream assertion accepts either real responses or a cleanly decoded UNIMPLEMENTED status; the
stand-in server (test_retry_*) always serves the stream, so the response path of every
client's stream wrapper is exercised regardless.
"""

from __future__ import annotations

import itertools
from typing import Any

import grpc
import pytest

from guardwire.v1 import conversation_pb2, guard_service_pb2, guard_service_pb2_grpc, verdict_pb2
from tests.clients.conftest import Example, Server
from tests.clients.stub_server import RETRY_DELAY_S, StubServer

pytestmark = [pytest.mark.clients, pytest.mark.timeout(600)]

# The fake backend's score of an ordinary text is a hash: pick (once, deterministically) the
# first candidate the server judges SAFE, so that the SAFE path is exercised.
CANDIDATES = (
    "How do I bake bread?",
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "How many legs does a spider have?",
    "Recommend a good book about gardening.",
    "Explain photosynthesis to a child.",
    "What time zone is Tokyo in?",
    "Translate 'good morning' into Spanish.",
)


def _python_reference(target: str, text: str) -> guard_service_pb2.ClassifyResponse:
    """The same request through the Python stubs, to compare the decoded scores."""
    with grpc.insecure_channel(target) as ch:
        stub = guard_service_pb2_grpc.GuardServiceStub(ch)
        req = guard_service_pb2.ClassifyRequest(
            conversation=conversation_pb2.Conversation(
                turns=[conversation_pb2.Turn(role=conversation_pb2.ROLE_USER, content=text)]
            )
        )
        resp: guard_service_pb2.ClassifyResponse = stub.Classify(req, timeout=30)
        return resp


def _safe_text(target: str) -> tuple[str, guard_service_pb2.ClassifyResponse]:
    for text in CANDIDATES:
        ref = _python_reference(target, text)
        if ref.verdict == verdict_pb2.VERDICT_SAFE:
            return text, ref
    pytest.fail(f"the fake backend judged every candidate text UNSAFE: {CANDIDATES}")


def _assert_typed_validation_error(err: dict[str, Any]) -> None:
    assert err["code"] == "INVALID_ARGUMENT", err
    assert err["domain"] == "guardwire.v1", err
    assert err["reason"] == "INVALID_REQUEST", err
    fields = [v["field"] for v in err["field_violations"]]
    assert "conversation.turns" in fields, err
    assert all(v["description"] for v in err["field_violations"]), err
    assert err["attempts"] == 1, "INVALID_ARGUMENT must not be retried"
    assert err["retry_delay_ms"] is None


def _assert_stream(stream: dict[str, Any], *, require_ok: bool) -> None:
    if stream["status"] == "UNIMPLEMENTED" and not require_ok:
        # Decoded cleanly into the typed error; no responses invented.
        assert stream["error"]["code"] == "UNIMPLEMENTED", stream
        assert stream["responses"] == [], stream
        return
    assert stream["status"] == "OK", stream
    rs = stream["responses"]
    # One complete user turn + one complete assistant turn: two final checks, in order.
    assert [r["sequence"] for r in rs] == [1, 2], stream
    assert [r["turn_index"] for r in rs] == [0, 1], stream
    assert all(r["final"] for r in rs), stream
    assert all(r["outcome"] in ("SAFE", "UNSAFE") for r in rs), stream
    assert all(r["verdict"] in ("VERDICT_SAFE", "VERDICT_UNSAFE") for r in rs), stream


def test_example_against_real_server(
    example: Example, real_server: Server, dead_target: str, record_property: Any
) -> None:
    text, ref = _safe_text(real_server.target)
    run = example.run("--addr", real_server.target, "--text", text, "--down-addr", dead_target)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    res = run.result
    assert res["language"] == example.lang

    # Unary classify, three-valued: SAFE with the exact score the Python stubs decode.
    c = res["classify"]
    assert c["outcome"] == "SAFE" and c["verdict"] == "VERDICT_SAFE", c
    assert c["unsafe_score"] == pytest.approx(ref.unsafe_score, abs=1e-6)
    assert 0.0 <= c["unsafe_score"] < ref.threshold
    assert c["allowed_fail_closed"] is True and c["allowed_fail_open"] is True
    assert "error" not in c

    # One stream (or a clean UNIMPLEMENTED while StreamClassify is not served yet).
    record_property("stream_status", res["stream"]["status"])
    _assert_stream(res["stream"], require_ok=False)

    # Empty conversation: INVALID_ARGUMENT decoded into the typed error.
    _assert_typed_validation_error(res["validation_error"])

    # Guard down: UNAVAILABLE after the bounded retries; allowed only when failing open.
    d = res["down"]
    assert d["outcome"] == "UNAVAILABLE", d
    assert d["allowed_fail_closed"] is False and d["allowed_fail_open"] is True
    assert "verdict" not in d
    assert d["error"]["code"] == "UNAVAILABLE", d
    assert d["error"]["attempts"] == 3, "UNAVAILABLE is retried, up to max attempts (3)"

    # A last turn containing GW_TEST_UNSAFE: UNSAFE (fake backend), blocked in either fail mode.
    u = res["unsafe"]
    assert u["outcome"] == "UNSAFE" and u["verdict"] == "VERDICT_UNSAFE", (
        f"the fake backend did not classify a turn containing GW_TEST_UNSAFE as UNSAFE: {u}"
    )
    assert u["unsafe_score"] >= 0.5
    assert u["allowed_fail_closed"] is False and u["allowed_fail_open"] is False


def test_retry_honours_retryinfo(example: Example, stub_server: StubServer) -> None:
    """RESOURCE_EXHAUSTED + RetryInfo(300 ms) twice, then success: the client waits at least
    the server's delay between attempts and succeeds on the third; the stand-in's stream is
    served, so the stream wrapper's response path is checked too."""
    text = f"GW_STUB_OVERLOAD_TWICE {example.lang}"
    run = example.run("--addr", stub_server.target, "--text", text)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    c = run.result["classify"]
    assert c["outcome"] == "SAFE", c
    times = stub_server.attempts[text]
    assert len(times) == 3, times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g >= RETRY_DELAY_S * 0.95 for g in gaps), f"retried before RetryInfo's delay: {gaps}"
    _assert_stream(run.result["stream"], require_ok=True)
    _assert_typed_validation_error(run.result["validation_error"])


def test_retry_is_bounded_and_overload_is_typed(example: Example, stub_server: StubServer) -> None:
    """Always overloaded: exactly max-attempts (3) tries, then a typed RESOURCE_EXHAUSTED /
    OVERLOADED error with the RetryInfo delay and metadata, and the outcome UNAVAILABLE."""
    text = f"GW_STUB_OVERLOAD_ALWAYS {example.lang}"
    run = example.run("--addr", stub_server.target, "--text", text)
    assert run.returncode == 1, "the example reports the failed classify"
    c = run.result["classify"]
    assert c["outcome"] == "UNAVAILABLE", c
    assert c["allowed_fail_closed"] is False and c["allowed_fail_open"] is True
    err = c["error"]
    assert err["code"] == "RESOURCE_EXHAUSTED", err
    assert err["reason"] == "OVERLOADED" and err["domain"] == "guardwire.v1", err
    assert err["metadata"] == {"queue_limit": "1"}, err
    assert err["retry_delay_ms"] == pytest.approx(RETRY_DELAY_S * 1000, abs=1), err
    assert err["attempts"] == 3, err
    assert len(stub_server.attempts[text]) == 3
