"""A small OTLP/gRPC receiver for tests: traces and metrics, kept in memory as protobufs.

Built on ``opentelemetry-proto`` (no collector binary is needed)::

    async with OtlpReceiver() as receiver:   # listens on 127.0.0.1:<ephemeral>
        ...  # point the exporters at receiver.endpoint
        await receiver.wait_for(lambda r: r.span_named("batch"))
        receiver.spans(), receiver.metrics(), receiver.raw_bytes()
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

__all__ = ["OtlpReceiver", "ReceivedMetric", "ReceivedSpan", "attributes"]


def _value(v: common_pb2.AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attributes(v.kvlist_value.values)
    return getattr(v, kind) if kind else None


def attributes(kvs: Any) -> dict[str, Any]:
    """OTLP ``KeyValue`` list → plain dict."""
    return {kv.key: _value(kv.value) for kv in kvs}


@dataclass(frozen=True)
class ReceivedSpan:
    span: Any  # opentelemetry.proto.trace.v1.trace_pb2.Span
    resource: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.span.name)

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes(self.span.attributes)


@dataclass(frozen=True)
class ReceivedMetric:
    metric: Any  # opentelemetry.proto.metrics.v1.metrics_pb2.Metric
    resource: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.metric.name)

    def points(self) -> list[Any]:
        kind = self.metric.WhichOneof("data")
        return list(getattr(self.metric, kind).data_points) if kind else []


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: list[trace_service_pb2.ExportTraceServiceRequest]) -> None:
        self._sink = sink

    async def Export(self, request: Any, context: Any) -> Any:
        self._sink.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, sink: list[metrics_service_pb2.ExportMetricsServiceRequest]) -> None:
        self._sink = sink

    async def Export(self, request: Any, context: Any) -> Any:
        self._sink.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class OtlpReceiver:
    """Receives OTLP/gRPC exports on loopback; ``endpoint`` is what an exporter is given."""

    def __init__(self) -> None:
        self.trace_requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metric_requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self._server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
            _Traces(self.trace_requests), self._server
        )
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            _Metrics(self.metric_requests), self._server
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> OtlpReceiver:
        await self._server.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._server.stop(0)

    def spans(self) -> list[ReceivedSpan]:
        return list(self._iter_spans())

    def _iter_spans(self) -> Iterator[ReceivedSpan]:
        for request in self.trace_requests:
            for rs in request.resource_spans:
                resource = attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        yield ReceivedSpan(span, resource)

    def span_named(self, name: str) -> list[ReceivedSpan]:
        return [s for s in self.spans() if s.name == name]

    def metrics(self) -> dict[str, ReceivedMetric]:
        """The last export of each metric (cumulative temporality: the last one has it all)."""
        out: dict[str, ReceivedMetric] = {}
        for request in self.metric_requests:
            for rm in request.resource_metrics:
                resource = attributes(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        out[metric.name] = ReceivedMetric(metric, resource)
        return out

    def raw_bytes(self) -> bytes:
        """Every export request, serialized: what a leak search looks through."""
        return b"".join(
            r.SerializeToString() for r in [*self.trace_requests, *self.metric_requests]
        )

    async def wait_for(
        self, condition: Callable[[OtlpReceiver], object], timeout_s: float = 10.0
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition(self):
            if time.monotonic() > deadline:
                raise TimeoutError("the OTLP receiver did not get the expected data in time")
            await asyncio.sleep(0.05)
