"""run_eval with a stub client: concurrency, order, errors counted, retries, abort, progress."""

from __future__ import annotations

import enum
import io
from types import SimpleNamespace

import pytest

from guardwire_tools.evaluation.datasets import LabeledExample
from guardwire_tools.evaluation.runner import EvalPolicy, Progress, _verdict, error_reason, run_eval
from tests.unit.evaluation.eval_helpers import StubClient, StubError, stub_score


def _examples(texts: list[str]) -> list[LabeledExample]:
    return [
        LabeledExample(
            [("user", t)],
            "bad" in t,
            frozenset({"S1"}) if "bad" in t else frozenset(),
            f"e{i}",
            tags={"kind": "bad" if "bad" in t else "good"},
        )
        for i, t in enumerate(texts)
    ]


async def test_scores_every_example_in_order_with_bounded_concurrency() -> None:
    client = StubClient(delay=0.002)
    ex = _examples([f"text {i}" + (" bad" if i % 3 == 0 else "") for i in range(40)])
    run = await run_eval(client, ex, concurrency=5, progress=False)
    assert [r.id for r in run.results] == [e.id for e in ex]
    assert client.max_in_flight == 5
    assert run.counts() == {
        "selected": 40,
        "scored": 40,
        "errors": 0,
        "not_run": 0,
        "scored_unsafe": 14,
        "scored_safe": 26,
        "retried": 0,
    }
    r0 = run.results[0]
    assert r0.unsafe_score == pytest.approx(stub_score(ex[0].conversation[0][1]))
    assert r0.verdict == ("unsafe" if r0.unsafe_score >= 0.5 else "safe")
    assert set(r0.category_scores) == {"S1", "S10", "S11", "S12"}
    assert run.model_id == "stub-test-model" and run.policy_id == "p-stub"
    assert run.served_threshold == 0.5 and run.category_names["S1"] == "name-S1"
    assert all(kw["include_category_scores"] for _, kw in client.calls)


async def test_errors_are_counted_never_dropped_and_overload_is_retried() -> None:
    client = StubClient()
    ex = _examples(["a", "FAIL 1", "BUSY b", "c bad", "FAIL 2"])
    run = await run_eval(client, ex, concurrency=2, progress=False, backoff_s=0.001)
    c = run.counts()
    assert (c["selected"], c["scored"], c["errors"], c["not_run"]) == (5, 3, 2, 0)
    assert c["retried"] == 1
    assert run.errors_by_reason() == {"BACKEND_FAILURE": 2}
    busy = run.results[2]
    assert busy.ok and busy.attempts == 2
    failed = run.results[1]
    assert not failed.ok and failed.error_message == "backend exploded"
    assert failed.unsafe_score is None


async def test_overload_that_persists_is_an_error_after_retries() -> None:
    class AlwaysBusy(StubClient):
        async def classify(self, conversation, **kw):  # type: ignore[no-untyped-def]
            raise StubError("OVERLOADED", "queue full")

    run = await run_eval(AlwaysBusy(), _examples(["x"]), progress=False, retries=3, backoff_s=0.001)
    assert run.results[0].attempts == 4 and run.errors_by_reason() == {"OVERLOADED": 4 - 3}


async def test_max_errors_aborts_and_reports_not_run() -> None:
    ex = _examples([f"FAIL {i}" for i in range(30)])
    run = await run_eval(StubClient(), ex, concurrency=2, progress=False, max_errors=3)
    c = run.counts()
    assert run.aborted == "more than 3 errors"
    assert c["errors"] >= 4 and c["errors"] + c["not_run"] + c["scored"] == 30
    assert c["not_run"] > 0


async def test_policy_is_passed_through() -> None:
    client = StubClient()
    pol = EvalPolicy(
        categories=(("S1", "A", "a"), ("S2", "B", "")), excluded_codes=("S2",), threshold=0.3
    )
    run = await run_eval(client, _examples(["x"]), policy=pol, progress=False)
    kw = client.calls[0][1]
    assert kw["categories"] == [("S1", "A", "a"), ("S2", "B", "")]
    assert kw["excluded_codes"] == ["S2"] and kw["threshold"] == 0.3
    assert "policy_id" not in kw
    assert run.served_threshold == 0.3 and set(run.results[0].category_scores) == {"S1"}
    assert EvalPolicy(policy_id="strict").classify_kwargs() == {
        "include_category_scores": True,
        "policy_id": "strict",
    }
    assert pol.describe()["excluded_codes"] == ["S2"]


async def test_concurrency_must_be_positive() -> None:
    with pytest.raises(ValueError):
        await run_eval(StubClient(), _examples(["x"]), concurrency=0)


async def test_model_info_is_collected_when_the_client_offers_it() -> None:
    class WithInfo(StubClient):
        async def get_model_info(self) -> SimpleNamespace:
            return SimpleNamespace(model_id="m", backend="fake", device="cpu")

    run = await run_eval(WithInfo(), _examples(["x"]), progress=False)
    assert run.model_info == {"model_id": "m", "backend": "fake", "device": "cpu"}

    class BrokenInfo(StubClient):
        async def get_model_info(self) -> None:
            raise RuntimeError("nope")

    run = await run_eval(BrokenInfo(), _examples(["x"]), progress=False)
    assert "nope" in run.model_info["error"] and run.counts()["scored"] == 1


def test_error_reason_fallbacks() -> None:
    assert error_reason(StubError("OVERLOADED")) == "OVERLOADED"

    class Coded(Exception):
        reason = ""
        code = SimpleNamespace(name="UNAVAILABLE")

    assert error_reason(Coded()) == "UNAVAILABLE"
    assert error_reason(KeyError("x")) == "KeyError"


def test_verdict_normalisation() -> None:
    class V(enum.Enum):
        SAFE = "safe"
        UNSAFE = "unsafe"

    class P(enum.IntEnum):
        VERDICT_UNSAFE = 2

    assert _verdict("UNSAFE") == "unsafe"
    assert _verdict(V.SAFE) == "safe"
    assert _verdict(P.VERDICT_UNSAFE) == "unsafe"


def test_progress_bar_plain_stream_prints_deciles() -> None:
    buf = io.StringIO()
    bar = Progress(20, stream=buf)
    for i in range(20):
        bar.advance(ok=i != 3)
    bar.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 11  # the first item, then one line per 10% on a non-terminal
    assert lines[-1].startswith("eval [##############################] 20/20")
    assert "errors 1" in lines[-1]


def test_progress_bar_tty_redraws_one_line() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    buf = Tty()
    bar = Progress(3, stream=buf)
    for _ in range(3):
        bar.advance(ok=True)
    bar.close()
    out = buf.getvalue()
    assert out.startswith("\r") and out.endswith("\n") and "3/3" in out
