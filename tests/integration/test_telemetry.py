"""Telemetry end to end: the real server exports to a real OTLP/gRPC receiver and serves a
Prometheus endpoint; spans, links and metrics arrive with their attributes and no conversation
text (unless the operator opts in with ``trace_conversations``)."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import urllib.request
from pathlib import Path

import grpc
import pytest

from guardwire_server.config import ConfigError
from guardwire_server.telemetry import (
    INSTALL_HINT,
    NO_TELEMETRY,
    TelemetryUnavailable,
    build_telemetry,
)
from tests.conftest import make_settings, run_server
from tests.integration.helpers import A, U, details, request, stub

try:
    import opentelemetry.sdk  # noqa: F401

    from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
except ImportError:  # the otel extra is optional: only the OTLP tests need it
    OtlpReceiver = None  # type: ignore[assignment,misc]

needs_otel = pytest.mark.skipif(OtlpReceiver is None, reason=f"needs `{INSTALL_HINT}`")

SECRET = "quokka-marmalade-7731"  # appears nowhere but in the conversations sent
CLASSIFY = "/guardwire.v1.GuardService/Classify"
SPAN_KIND_SERVER = 2
STATUS_CODE_ERROR = 2
STAGES = {"validate", "render", "queue", "inference", "parse"}


@pytest.fixture(autouse=True)
def _fast_export(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # ms
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")  # ms


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def _children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> dict[str, ReceivedSpan]:
    return {
        s.name: s
        for s in spans
        if s.span.trace_id == parent.span.trace_id and s.span.parent_span_id == parent.span.span_id
    }


async def _classify_ok_and_invalid(target: str) -> tuple[list[object], str]:
    async with grpc.aio.insecure_channel(target) as ch:
        ok = [
            await stub(ch).Classify(request((U, f"{SECRET} how do I bake bread?")), timeout=30)
            for _ in range(2)  # the second one reuses the cached policy prefix
        ]
        with pytest.raises(grpc.aio.AioRpcError) as info:  # an assistant turn cannot come first
            await stub(ch).Classify(request((A, f"{SECRET} sure")), timeout=30)
    assert details(info.value)["reason"] == "INVALID_REQUEST"
    return ok, str(info.value.details())


@needs_otel
async def test_spans_and_metrics_arrive_without_conversation_text(tiny_model_dir: Path) -> None:
    prom_port = _free_port()
    async with OtlpReceiver() as rx:
        async with run_server(
            tiny_model_dir,
            otel_enabled=True,
            otel_endpoint=rx.endpoint,
            otel_service_name="guardwire-test",
            prometheus_port=prom_port,
        ) as running:
            ok, error_message = await _classify_ok_and_invalid(running.target)
            # exported live, before the drain's flush
            await rx.wait_for(lambda r: len(r.span_named(CLASSIFY)) == 3)
            scrape = await asyncio.to_thread(_scrape, prom_port)
        # the drain flushed everything pending

    # -- traces --------------------------------------------------------------------------------
    spans = rx.spans()
    assert {s.resource["service.name"] for s in spans} == {"guardwire-test"}
    rpcs = rx.span_named(CLASSIFY)
    assert all(s.span.kind == SPAN_KIND_SERVER for s in rpcs)
    assert not [s for s in spans if "Health" in s.name], "health probes are not traced"
    failed = [s for s in rpcs if s.attributes.get("guardwire.error.reason")]
    succeeded = [s for s in rpcs if s not in failed]
    assert len(failed) == 1 and len(succeeded) == 2

    batches = {s.span.span_id: s for s in rx.span_named("batch")}
    assert batches and all(not b.span.parent_span_id for b in batches.values()), "batch is a root"
    for rpc, response in zip(
        sorted(succeeded, key=lambda s: s.span.start_time_unix_nano), ok, strict=True
    ):
        a = rpc.attributes
        assert a["guardwire.backend"] == "torch"
        assert a["guardwire.model"] == str(tiny_model_dir)
        assert a["guardwire.policy_id"] == response.policy_id  # type: ignore[attr-defined]
        assert a["guardwire.verdict"] in ("safe", "unsafe")
        assert a["guardwire.unsafe_score"] == pytest.approx(response.unsafe_score, abs=1e-6)  # type: ignore[attr-defined]
        assert a["guardwire.batch.size"] >= 1
        assert a["guardwire.tokens.computed"] == response.timings.computed_tokens  # type: ignore[attr-defined]
        assert a["guardwire.tokens.cached"] == response.timings.cached_tokens  # type: ignore[attr-defined]
        assert a["rpc.grpc.status_code"] == 0

        children = _children(spans, rpc)
        assert set(children) == STAGES
        start = [children[n].span.start_time_unix_nano for n in ("render", "queue", "inference")]
        assert start == sorted(start), "render → queue → inference in time order"
        assert children["render"].attributes["guardwire.tokens.prompt"] > 0
        assert children["parse"].attributes["guardwire.verdict"] == a["guardwire.verdict"]
        inference = children["inference"]
        assert inference.attributes["guardwire.batch.size"] == a["guardwire.batch.size"]
        (link,) = inference.span.links
        batch = batches[link.span_id]
        assert link.trace_id == batch.span.trace_id != rpc.span.trace_id
        assert batch.attributes["guardwire.batch.size"] == a["guardwire.batch.size"]
        assert batch.attributes["guardwire.batch.tokens"] > 0
        assert batch.attributes["guardwire.backend"] == "torch"

    (bad,) = failed
    assert bad.attributes["guardwire.error.reason"] == "INVALID_REQUEST"
    assert bad.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert bad.span.status.code == STATUS_CODE_ERROR
    bad_children = _children(spans, bad)
    assert set(bad_children) == {"validate"}
    assert bad_children["validate"].attributes["guardwire.error.reason"] == "INVALID_REQUEST"

    # -- metrics (OTLP) ------------------------------------------------------------------------
    metrics = rx.metrics()
    units = {
        "guardwire.request.duration": "s",
        "guardwire.queue.wait": "s",
        "guardwire.batch.size": "{request}",
        "guardwire.batch.tokens": "{token}",
        "guardwire.queue.depth": "{request}",
        "guardwire.verdicts": "{verdict}",
        "guardwire.errors": "{error}",
    }
    for name, unit in units.items():
        assert name in metrics, sorted(metrics)
        assert metrics[name].metric.unit == unit, name
        for point in metrics[name].points():
            labels = {kv.key: kv.value.string_value for kv in point.attributes}
            assert labels["backend"] == "torch" and labels["model"] == str(tiny_model_dir)
    assert metrics["guardwire.request.duration"].resource["service.name"] == "guardwire-test"

    def by_labels(name: str, *keys: str) -> dict[tuple[str, ...], object]:
        out = {}
        for p in metrics[name].points():
            labels = {kv.key: kv.value.string_value for kv in p.attributes}
            out[tuple(labels[k] for k in keys)] = p
        return out

    durations = by_labels("guardwire.request.duration", "rpc", "code")
    assert durations[("Classify", "OK")].count == 2  # type: ignore[attr-defined]
    assert durations[("Classify", "INVALID_ARGUMENT")].count == 1  # type: ignore[attr-defined]
    errors = by_labels("guardwire.errors", "rpc", "reason")
    assert errors[("Classify", "INVALID_REQUEST")].as_int == 1  # type: ignore[attr-defined]
    verdicts = by_labels("guardwire.verdicts", "verdict", "category")
    assert sum(p.as_int for p in verdicts.values()) == 2  # type: ignore[attr-defined]
    assert sum(p.count for p in metrics["guardwire.batch.size"].points()) >= 1
    if any(r.timings.cached_tokens for r in ok):  # type: ignore[attr-defined]
        (hits,) = metrics["guardwire.prefix_cache.hits"].points()
        assert hits.as_int == sum(1 for r in ok if r.timings.cached_tokens)  # type: ignore[attr-defined]

    # -- Prometheus ----------------------------------------------------------------------------
    for family in (
        "guardwire_request_duration_seconds_bucket",
        "guardwire_queue_wait_seconds_bucket",
        "guardwire_batch_size_bucket",
        "guardwire_batch_tokens_bucket",
        "guardwire_queue_depth",
        "guardwire_verdicts_total",
        "guardwire_errors_total",
    ):
        assert f"\n{family}{{" in scrape, family
    assert 'reason="INVALID_REQUEST"' in scrape

    # -- privacy -------------------------------------------------------------------------------
    assert SECRET.encode() not in rx.raw_bytes()
    assert SECRET not in scrape
    assert error_message.encode() not in rx.raw_bytes(), "errors carry a reason, not a message"


async def _stream(target: str, messages: list[object]) -> list[object]:
    async def gen():  # type: ignore[no-untyped-def]
        for m in messages:
            yield m

    async with grpc.aio.insecure_channel(target) as ch:
        return [r async for r in stub(ch).StreamClassify(gen(), timeout=30)]


@needs_otel
async def test_stream_checks_are_counted_without_conversation_text(tiny_model_dir: Path) -> None:
    from guardwire.v1 import conversation_pb2, guard_service_pb2

    def turn(role: int, text: str) -> object:
        return guard_service_pb2.StreamClassifyRequest(
            turn=conversation_pb2.Turn(role=role, content=text)
        )

    opened = guard_service_pb2.StreamClassifyRequest(open=guard_service_pb2.StreamOpen())
    async with OtlpReceiver() as rx:
        async with run_server(
            tiny_model_dir, otel_enabled=True, otel_endpoint=rx.endpoint
        ) as running:
            answers = await _stream(
                running.target, [opened, turn(U, f"{SECRET} hi"), turn(A, f"{SECRET} hello")]
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:  # roles must alternate
                await _stream(running.target, [opened, turn(A, f"{SECRET} first")])
    assert len(answers) == 2
    assert details(info.value)["reason"] == "STREAM_PROTOCOL"

    metrics = rx.metrics()

    def points(name: str) -> list[tuple[dict[str, str], object]]:
        return [
            ({kv.key: kv.value.string_value for kv in p.attributes}, p)
            for p in metrics[name].points()
        ]

    streams = [
        (labels["code"], p.count)  # type: ignore[attr-defined]
        for labels, p in points("guardwire.request.duration")
        if labels["rpc"] == "StreamClassify"
    ]
    assert sorted(streams) == [("INVALID_ARGUMENT", 1), ("OK", 1)]
    verdicts = [
        p.as_int  # type: ignore[attr-defined]
        for labels, p in points("guardwire.verdicts")
        if labels["rpc"] == "StreamClassify"
    ]
    assert sum(verdicts) == 2, "one verdict per answered check"
    errors = {
        (labels["rpc"], labels["reason"]): p.as_int  # type: ignore[attr-defined]
        for labels, p in points("guardwire.errors")
    }
    assert errors == {("StreamClassify", "STREAM_PROTOCOL"): 1}
    assert SECRET.encode() not in rx.raw_bytes()


@needs_otel
async def test_trace_conversations_opt_in_puts_the_text_in_spans(tiny_model_dir: Path) -> None:
    async with OtlpReceiver() as rx:
        async with run_server(
            tiny_model_dir,
            otel_enabled=True,
            otel_endpoint=rx.endpoint,
            trace_conversations=True,
        ) as running:
            async with grpc.aio.insecure_channel(running.target) as ch:
                await stub(ch).Classify(request((U, f"{SECRET} hello")), timeout=30)
    assert SECRET.encode() in rx.raw_bytes()
    (render,) = rx.span_named("render")
    assert SECRET in render.attributes["guardwire.conversation"]
    assert {s.resource["service.name"] for s in rx.spans()} == {"guardwire"}


@pytest.fixture
def _no_otel_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``import opentelemetry...`` fails, as on an install without the extra."""
    for name in [m for m in sys.modules if m.split(".")[0] == "opentelemetry"] or ["opentelemetry"]:
        monkeypatch.setitem(sys.modules, name, None)


def _samples(scrape: str, family: str) -> dict[str, float]:
    """``{label_key: value}`` of one Prometheus family, keyed by the value of its non-common
    label (``result`` / ``event``), or ``""`` when it has none."""
    out = {}
    for line in scrape.splitlines():
        if not line.startswith(family + "{"):
            continue
        labels, value = line[len(family) + 1 :].rsplit("} ", 1)
        pairs = dict(kv.split("=", 1) for kv in labels.split(","))
        key = next((pairs[k].strip('"') for k in ("result", "event") if k in pairs), "")
        out[key] = float(value)
    return out


@needs_otel
async def test_verdict_cache_and_backend_health_are_exported(tiny_model_dir: Path) -> None:
    prom_port = _free_port()
    fail = threading.Event()
    async with run_server(
        tiny_model_dir,
        backend="fake",
        backend_options={"fail_when": lambda items: fail.is_set()},
        otel_enabled=True,
        prometheus_port=prom_port,
        verdict_cache_entries=16,
        unhealthy_after_failures=1,
        recovery_probe_s=30.0,  # no probe turns it back during the test
        max_batch_size=1,
    ) as running:
        async with grpc.aio.insecure_channel(running.target) as ch:
            same = request((U, "what is the capital of France?"))
            await stub(ch).Classify(same, timeout=10)
            await stub(ch).Classify(same, timeout=10)  # answered from the verdict cache
            healthy = await asyncio.to_thread(_scrape, prom_port)
            fail.set()
            with pytest.raises(grpc.aio.AioRpcError):
                await stub(ch).Classify(request((U, "a new question")), timeout=10)
            failing = await asyncio.to_thread(_scrape, prom_port)

    assert _samples(healthy, "guardwire_verdict_cache_lookups_total") == {
        "hit": 1.0,
        "coalesced": 0.0,
        "miss": 1.0,
    }
    assert _samples(healthy, "guardwire_verdict_cache_entries") == {"": 1.0}
    assert _samples(healthy, "guardwire_backend_healthy") == {"": 1.0}
    assert _samples(healthy, "guardwire_backend_events_total")["failed_batches"] == 0.0
    assert _samples(failing, "guardwire_backend_healthy") == {"": 0.0}
    assert _samples(failing, "guardwire_backend_events_total")["failed_batches"] == 1.0
    assert _samples(failing, "guardwire_verdict_cache_lookups_total")["miss"] == 2.0


@pytest.mark.usefixtures("_no_otel_packages")
async def test_telemetry_off_needs_no_otel_packages(tiny_model_dir: Path) -> None:
    async with run_server(tiny_model_dir, backend="fake") as running:
        assert running.server.telemetry is NO_TELEMETRY
        async with grpc.aio.insecure_channel(running.target) as ch:
            r = await stub(ch).Classify(request((U, "hello")), timeout=30)
    assert r.policy_id


@pytest.mark.usefixtures("_no_otel_packages")
def test_telemetry_on_without_packages_names_the_extra() -> None:
    with pytest.raises(TelemetryUnavailable, match=r"pip install 'guardwire\[otel\]'"):
        build_telemetry(make_settings(otel_enabled=True, otel_endpoint="http://127.0.0.1:4317"))


@pytest.mark.parametrize(
    ("key", "value"),
    [("prometheus_port", 70000), ("otel_endpoint", "collector"), ("otel_service_name", " ")],
)
def test_telemetry_options_are_validated(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        make_settings(**{key: value})
