"""OpenTelemetry traces and metrics: optional, off by default, wired at the edges and at stage
boundaries.

``build_telemetry(settings)`` returns the no-op ``Telemetry`` when ``otel_enabled`` is false, so
the server runs without the ``otel`` extra; when it is true the OpenTelemetry packages are
imported then, and a missing one raises ``TelemetryUnavailable`` (it names
``pip install 'guardwire[otel]'``). Providers are private to the server (nothing is set
globally), with a ``service.name`` resource; spans and metrics go out by OTLP/gRPC
(``otel_endpoint``, "" = off) and metrics also through a Prometheus ``/metrics`` endpoint
(``prometheus_port``, 0 = off).

Span tree of one Classify (the RPC span comes from the grpc instrumentation's aio interceptor)::

    /guardwire.v1.GuardService/Classify   model, backend, policy id, verdict, unsafe score,
     │                                    batch size, token counts; error reason on failure
     ├── validate    the request checks
     ├── render      adapter.encode: prompt tokens
     ├── queue       submit → launch of its batch
     ├── inference   the batch's scoring; LINKS to the batch span
     └── parse       adapter.interpret: verdict, unsafe score
    batch            one root span per model batch: size, tokens, computed/cached tokens

Conversation text never goes into a span or a metric unless ``trace_conversations`` is set (then
the ``render`` span carries it as ``guardwire.conversation``). Metric labels are a fixed small set:
``model``, ``backend``, ``rpc``, plus ``code``, ``verdict``, ``category`` or ``reason`` where
named below.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from guardwire_backends.base import ScoreResult
from guardwire_server.config import ConfigError, Settings
from guardwire_server.domain import Conversation, Verdict
from guardwire_server.errors import BackendFailure, GuardwireError

if TYPE_CHECKING:
    import grpc

    from guardwire_server.batcher import BatchOutcome, MicroBatcher
    from guardwire_server.guard import Guard, ModelDescription
    from guardwire_server.health_monitor import HealthMonitor
    from guardwire_server.verdict_cache import VerdictCache

__all__ = [
    "ATTR",
    "INSTALL_HINT",
    "METRICS",
    "NO_TELEMETRY",
    "BatchStages",
    "RpcScope",
    "SpanLike",
    "Telemetry",
    "TelemetryUnavailable",
    "build_telemetry",
]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'guardwire[otel]'"

#: Span attribute keys set by Guardwire (the RPC span also has the instrumentation's ``rpc.*``).
ATTR = {
    "model": "guardwire.model",
    "backend": "guardwire.backend",
    "policy_id": "guardwire.policy_id",
    "verdict": "guardwire.verdict",
    "unsafe_score": "guardwire.unsafe_score",
    "categories": "guardwire.categories",
    "batch_size": "guardwire.batch.size",
    "batch_tokens": "guardwire.batch.tokens",
    "prompt_tokens": "guardwire.tokens.prompt",
    "computed_tokens": "guardwire.tokens.computed",
    "cached_tokens": "guardwire.tokens.cached",
    "error_reason": "guardwire.error.reason",
    "conversation": "guardwire.conversation",
}

#: name -> (unit, extra labels beyond model/backend, description)
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "guardwire.request.duration": ("s", ("rpc", "code"), "RPC latency seen by the server"),
    "guardwire.queue.wait": ("s", (), "Time from submit to the launch of the item's batch"),
    "guardwire.batch.duration": ("s", (), "Scoring time of one model batch"),
    "guardwire.batch.size": ("{request}", (), "Requests in one model batch"),
    "guardwire.batch.tokens": ("{token}", (), "Token cost of one model batch"),
    "guardwire.queue.depth": ("{request}", (), "Requests waiting for a batch"),
    "guardwire.verdicts": ("{verdict}", ("rpc", "verdict", "category"), "Verdicts returned"),
    "guardwire.errors": ("{error}", ("rpc", "reason"), "Failed RPCs by ErrorReason"),
    "guardwire.prefix_cache.hits": ("{request}", (), "Requests whose policy prefix was cached"),
    "guardwire.verdict_cache.lookups": (
        "{request}",
        ("result",),
        "Verdict-cache lookups: hit, coalesced (joined an identical request in flight) or miss",
    ),
    "guardwire.verdict_cache.entries": ("{entry}", (), "Verdicts held by the verdict cache"),
    "guardwire.backend.healthy": (
        "1",
        (),
        "1 while the backend answers; 0 after repeated failed batches, a hang or out of memory",
    ),
    "guardwire.backend.events": (
        "{event}",
        ("event",),
        "Backend faults and recoveries: failed_batches, out_of_memory, hangs, probes, recoveries",
    ),
}

_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TOKEN_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
_FLUSH_TIMEOUT_MS = 5000


class TelemetryUnavailable(ConfigError):
    """``otel_enabled`` is true but the OpenTelemetry packages are not installed."""


class SpanLike(Protocol):
    def set_attribute(self, key: str, value: Any) -> Any: ...


class RpcScope(Protocol):
    """One RPC in flight (``Telemetry.rpc``)."""

    def succeeded(self, description: ModelDescription, verdict: Verdict) -> None: ...

    def failed(self, exc: BaseException, code: grpc.StatusCode) -> None: ...


class BatchStages(Protocol):
    """One ``batcher.submit`` (``Telemetry.batched``)."""

    def done(self, outcome: BatchOutcome) -> None: ...


class _NoopSpan:
    """Stands in for a span, and for the context managers that yield one, when disabled."""

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def succeeded(self, description: ModelDescription, verdict: Verdict) -> None:
        pass

    def failed(self, exc: BaseException, code: grpc.StatusCode) -> None:
        pass

    def done(self, outcome: BatchOutcome) -> None:
        pass

    def __enter__(self) -> _NoopSpan:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


_NOOP = _NoopSpan()


class Telemetry:
    """Telemetry as the server sees it. This base class is the disabled one: every method is a
    cheap no-op; ``build_telemetry`` returns the OpenTelemetry-backed subclass when enabled.

    Example (what ``Guard.score`` does)::

        with telemetry.span("render", conversation=conversation) as span:
            prompt = adapter.encode(conversation, policy)
            span.set_attribute(ATTR["prompt_tokens"], prompt.item.num_tokens)
    """

    enabled = False
    prometheus_port = 0  # the bound port of the /metrics endpoint once started (0 = none)

    def server_interceptors(self) -> list[Any]:
        """Interceptors for ``grpc.aio.server`` (the RPC spans)."""
        return []

    def start(self) -> None:
        """Starts the Prometheus endpoint (when configured)."""

    def instrument(self, guard: Guard) -> None:
        """Hooks a loaded guard: stage spans, batch spans, batch, queue and cache metrics."""

    def watch_health(self, monitor: HealthMonitor) -> None:
        """Exports the backend's health and its fault and recovery counters."""

    def shutdown(self) -> None:
        """Flushes and exports what is pending, then stops. Blocking: call it in a thread."""

    def span(
        self, name: str, *, conversation: Conversation | None = None
    ) -> contextlib.AbstractContextManager[SpanLike]:
        """A child span of the current one; an exception marks it failed with its reason."""
        return _NOOP

    def batched(self) -> contextlib.AbstractContextManager[BatchStages]:
        """Wraps ``batcher.submit``; call ``.done(outcome)`` inside to emit the ``queue`` and
        ``inference`` spans (the latter linked to the batch span)."""
        return _NOOP

    def rpc(self, name: str) -> contextlib.AbstractContextManager[RpcScope]:
        """Wraps one RPC: records its duration; ``.succeeded(description, verdict)`` and
        ``.failed(exc, code)`` annotate the RPC span and count verdicts and errors."""
        return _NOOP

    def describe_verdict(self, span: SpanLike, verdict: Verdict) -> None:
        """Puts the verdict's attributes on ``span``."""


NO_TELEMETRY = Telemetry()


def build_telemetry(settings: Settings) -> Telemetry:
    """The telemetry the settings ask for; raises ``TelemetryUnavailable`` if the packages are
    missing."""
    if not settings.otel_enabled:
        return NO_TELEMETRY
    try:
        return _OtelTelemetry(settings)
    except ImportError as exc:
        raise TelemetryUnavailable(
            f"otel_enabled is true but a telemetry package is missing ({exc}); install "
            f"them with `{INSTALL_HINT}`, or set otel_enabled=false"
        ) from exc


def _reason(exc: BaseException) -> str:
    return exc.reason if isinstance(exc, GuardwireError) else "INTERNAL_ERROR"


class _OtelTelemetry(Telemetry):
    """The OpenTelemetry SDK behind ``Telemetry``; imports the packages when built."""

    enabled = True

    def __init__(self, settings: Settings) -> None:
        from opentelemetry import context as otel_context
        from opentelemetry import trace
        from opentelemetry.metrics import Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.trace import Link, Status, StatusCode

        self._trace = trace
        self._link: Any = Link  # untyped use: the span context is opaque to the batcher
        self._observation = Observation  # what the observable instruments' callbacks return
        self._status, self._error_code = Status, StatusCode.ERROR
        self._root_context = otel_context.Context  # an empty context: the batch span is a root
        self._settings = settings
        self._trace_conversations = settings.trace_conversations
        self._labels = {"model": settings.model or "unknown", "backend": settings.backend}
        self._span_attrs: dict[str, Any] = {}
        self._batcher: MicroBatcher | None = None
        self._verdict_cache: VerdictCache | None = None
        self._health: HealthMonitor | None = None
        self._known_codes: frozenset[str] = frozenset()
        self._last_depth = 0
        self._http: Any = None

        resource = Resource.create({"service.name": settings.otel_service_name})
        self._tracer_provider = TracerProvider(resource=resource)
        readers: list[Any] = []
        if settings.otel_endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter,
            )
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            self._tracer_provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_endpoint))
            )
            readers.append(
                PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=settings.otel_endpoint))
            )
        self._registry: Any = None
        if settings.prometheus_port:
            import prometheus_client
            from opentelemetry.exporter.prometheus import PrometheusMetricReader

            self._registry = prometheus_client.CollectorRegistry()  # private: one per server
            readers.append(PrometheusMetricReader(registry=self._registry))
        self._meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        self._tracer = self._tracer_provider.get_tracer("guardwire")
        self._make_instruments(self._meter_provider.get_meter("guardwire"))

        from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

        from guardwire.v1 import guard_service_pb2

        service = guard_service_pb2.DESCRIPTOR.services_by_name["GuardService"].full_name
        self._interceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
            tracer_provider=self._tracer_provider,
            filter_=filters.service_name(service),  # no spans for health probes or reflection
        )

    def _make_instruments(self, meter: Any) -> None:
        def unit(name: str) -> str:
            return METRICS[name][0]

        def histogram(name: str, buckets: Sequence[float]) -> Any:
            return meter.create_histogram(
                name,
                unit=unit(name),
                description=METRICS[name][2],
                explicit_bucket_boundaries_advisory=buckets,
            )

        def counter(name: str) -> Any:
            return meter.create_counter(name, unit=unit(name), description=METRICS[name][2])

        self._request_duration = histogram("guardwire.request.duration", _SECONDS_BUCKETS)
        self._queue_wait = histogram("guardwire.queue.wait", _SECONDS_BUCKETS)
        self._batch_duration = histogram("guardwire.batch.duration", _SECONDS_BUCKETS)
        self._batch_size = histogram("guardwire.batch.size", _SIZE_BUCKETS)
        self._batch_tokens = histogram("guardwire.batch.tokens", _TOKEN_BUCKETS)
        self._verdicts = counter("guardwire.verdicts")
        self._errors = counter("guardwire.errors")
        self._prefix_hits = counter("guardwire.prefix_cache.hits")
        observed = {  # read when exported: the counters live in the cache and the monitor
            "guardwire.queue.depth": (meter.create_observable_gauge, self._observe_queue_depth),
            "guardwire.verdict_cache.lookups": (
                meter.create_observable_counter,
                self._observe_cache_lookups,
            ),
            "guardwire.verdict_cache.entries": (
                meter.create_observable_gauge,
                self._observe_cache_entries,
            ),
            "guardwire.backend.healthy": (meter.create_observable_gauge, self._observe_healthy),
            "guardwire.backend.events": (
                meter.create_observable_counter,
                self._observe_backend_events,
            ),
        }
        for name, (create, callback) in observed.items():
            create(name, callbacks=[callback], unit=unit(name), description=METRICS[name][2])

    # -- lifecycle -----------------------------------------------------------------------------

    def server_interceptors(self) -> list[Any]:
        return [self._interceptor]

    def start(self) -> None:
        if self._registry is None:
            return
        import prometheus_client

        self._http, _ = prometheus_client.start_http_server(
            self._settings.prometheus_port, registry=self._registry
        )
        self.prometheus_port = self._http.server_port
        log.info("Prometheus metrics on :%d/metrics", self.prometheus_port)

    def instrument(self, guard: Guard) -> None:
        d = guard.description
        self._labels = {"model": d.model_id, "backend": d.backend}
        self._span_attrs = {ATTR["model"]: d.model_id, ATTR["backend"]: d.backend}
        policies = [guard.catalog.default, *guard.catalog.named.values()]
        self._known_codes = frozenset(c.code for p in policies for c in p.categories)
        self._batcher = guard.batcher
        self._verdict_cache = guard.verdict_cache
        guard.telemetry = self
        guard.batcher.on_batch = self._on_batch
        guard.batcher.trace_batch = self._trace_batch

    def watch_health(self, monitor: HealthMonitor) -> None:
        self._health = monitor

    def shutdown(self) -> None:
        try:
            self._tracer_provider.force_flush(_FLUSH_TIMEOUT_MS)
            self._tracer_provider.shutdown()
            self._meter_provider.force_flush(_FLUSH_TIMEOUT_MS)
            self._meter_provider.shutdown(_FLUSH_TIMEOUT_MS)
        except Exception:
            log.exception("telemetry shutdown failed; some spans or metrics may be lost")
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    # -- spans ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def span(self, name: str, *, conversation: Conversation | None = None) -> Iterator[SpanLike]:
        attributes = {}
        if conversation is not None and self._trace_conversations:
            turns = [{"role": t.role.value, "content": t.content} for t in conversation.turns]
            attributes[ATTR["conversation"]] = json.dumps(turns, ensure_ascii=False)
        with self._tracer.start_as_current_span(
            name, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                yield span
            except Exception as exc:
                self._mark_failed(span, exc)
                raise

    @contextlib.contextmanager
    def batched(self) -> Iterator[_Stages]:
        stages = _Stages(self, time.time_ns())
        try:
            yield stages
        except Exception as exc:
            stages.failed(exc)
            raise

    @contextlib.contextmanager
    def rpc(self, name: str) -> Iterator[_Rpc]:
        scope = _Rpc(self, name, self._trace.get_current_span())
        start = time.perf_counter()
        try:
            yield scope
        finally:
            self._request_duration.record(
                time.perf_counter() - start, {**self._labels, "rpc": name, "code": scope.code}
            )

    def describe_verdict(self, span: SpanLike, verdict: Verdict) -> None:
        span.set_attribute(ATTR["verdict"], verdict.label.value)
        span.set_attribute(ATTR["unsafe_score"], verdict.unsafe_score)
        span.set_attribute(ATTR["policy_id"], verdict.policy_id)
        span.set_attribute(ATTR["categories"], [c.code for c in verdict.violated])

    def _mark_failed(self, span: Any, exc: BaseException) -> None:
        """Reason and type only: an exception's message may quote the request."""
        reason = _reason(exc)
        span.set_attribute(ATTR["error_reason"], reason)
        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(self._status(self._error_code, reason))

    def _trace_batch(self, size: int, tokens: int) -> _BatchSpan:
        span = self._tracer.start_span(
            "batch",
            context=self._root_context(),
            attributes={**self._span_attrs, ATTR["batch_size"]: size, ATTR["batch_tokens"]: tokens},
        )
        return _BatchSpan(self, span)

    # -- metrics -------------------------------------------------------------------------------

    def _on_batch(self, size: int, tokens: int, waits: list[float], inference_s: float) -> None:
        labels = self._labels
        self._batch_size.record(size, labels)
        self._batch_tokens.record(tokens, labels)
        self._batch_duration.record(inference_s, labels)
        for wait in waits:
            self._queue_wait.record(wait, labels)

    def _observe_queue_depth(self, options: Any) -> list[Any]:
        if self._batcher is None:
            return []
        try:
            self._last_depth = self._batcher.queue_depth
        except RuntimeError:  # read from the exporter's thread while the loop changed the queue
            pass
        return [self._observation(self._last_depth, self._labels)]

    def _observe_cache_lookups(self, options: Any) -> list[Any]:
        cache = self._verdict_cache
        if cache is None:
            return []
        counts = {"hit": cache.hits, "coalesced": cache.coalesced, "miss": cache.misses}
        return [self._observation(n, {**self._labels, "result": r}) for r, n in counts.items()]

    def _observe_cache_entries(self, options: Any) -> list[Any]:
        cache = self._verdict_cache
        return [] if cache is None else [self._observation(len(cache), self._labels)]

    def _observe_healthy(self, options: Any) -> list[Any]:
        monitor = self._health
        return [] if monitor is None else [self._observation(int(monitor.healthy), self._labels)]

    def _observe_backend_events(self, options: Any) -> list[Any]:
        monitor = self._health
        if monitor is None:
            return []
        counts = dict(monitor.counters)  # a copy: the worker thread may be counting
        return [self._observation(n, {**self._labels, "event": e}) for e, n in counts.items()]

    def _count_verdict(self, rpc: str, verdict: Verdict) -> None:
        category = "none"
        if verdict.violated:
            top = max(verdict.violated, key=lambda c: c.score).code
            category = top if top in self._known_codes else "other"  # custom codes: bounded
        self._verdicts.add(
            1, {**self._labels, "rpc": rpc, "verdict": verdict.label.value, "category": category}
        )
        if verdict.timings.cached_tokens > 0:
            self._prefix_hits.add(1, self._labels)


class _Rpc:
    """One RPC in flight (``Telemetry.rpc``): annotates the RPC span, counts the outcome."""

    def __init__(self, telemetry: _OtelTelemetry, name: str, span: Any) -> None:
        self._telemetry = telemetry
        self._name = name
        self._span = span
        self.code = "OK"

    def succeeded(self, description: ModelDescription, verdict: Verdict) -> None:
        t = verdict.timings
        self._span.set_attributes(
            {
                ATTR["model"]: description.model_id,
                ATTR["backend"]: description.backend,
                ATTR["batch_size"]: t.batch_size,
                ATTR["computed_tokens"]: t.computed_tokens,
                ATTR["cached_tokens"]: t.cached_tokens,
            }
        )
        self._telemetry.describe_verdict(self._span, verdict)
        self._telemetry._count_verdict(self._name, verdict)

    def failed(self, exc: BaseException, code: grpc.StatusCode) -> None:
        self.code = code.name
        self._span.set_attribute("rpc.grpc.status_code", code.value[0])
        self._telemetry._mark_failed(self._span, exc)
        self._telemetry._errors.add(
            1, {**self._telemetry._labels, "rpc": self._name, "reason": _reason(exc)}
        )


class _Stages:
    """The ``queue`` and ``inference`` spans of one submit, drawn from the batcher's timings."""

    def __init__(self, telemetry: _OtelTelemetry, submitted_ns: int) -> None:
        self._telemetry = telemetry
        self._submitted_ns = submitted_ns

    def done(self, outcome: BatchOutcome) -> None:
        tracer = self._telemetry._tracer
        launched_ns = self._submitted_ns + int(outcome.queue_s * 1e9)
        queue = tracer.start_span("queue", start_time=self._submitted_ns)
        queue.end(end_time=launched_ns)
        links = []
        if outcome.batch_span_context is not None:
            links.append(self._telemetry._link(outcome.batch_span_context))
        inference = tracer.start_span(
            "inference",
            start_time=launched_ns,
            links=links,
            attributes={
                ATTR["batch_size"]: outcome.batch_size,
                ATTR["computed_tokens"]: outcome.result.computed_tokens,
                ATTR["cached_tokens"]: outcome.result.cached_tokens,
            },
        )
        inference.end(end_time=launched_ns + int(outcome.inference_s * 1e9))

    def failed(self, exc: BaseException) -> None:
        name = "inference" if isinstance(exc, BackendFailure) else "queue"
        span = self._telemetry._tracer.start_span(name, start_time=self._submitted_ns)
        self._telemetry._mark_failed(span, exc)
        span.end()


class _BatchSpan:
    """The batcher's ``BatchTrace``: a root span per batch, linked to by its items."""

    def __init__(self, telemetry: _OtelTelemetry, span: Any) -> None:
        self._telemetry = telemetry
        self._span = span
        self.context = span.get_span_context()

    def finish(self, results: Sequence[ScoreResult] | None, error: BaseException | None) -> None:
        if error is not None:
            self._span.set_attribute(ATTR["error_reason"], BackendFailure.reason)
            self._span.set_attribute("error.type", type(error).__name__)
            t = self._telemetry
            self._span.set_status(t._status(t._error_code, BackendFailure.reason))
        else:
            self._span.set_attribute(
                ATTR["computed_tokens"], sum(r.computed_tokens for r in results or ())
            )
            self._span.set_attribute(
                ATTR["cached_tokens"], sum(r.cached_tokens for r in results or ())
            )
        self._span.end()
