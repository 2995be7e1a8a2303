"""Drives a real Guardwire server over gRPC: a server subprocess, closed- and open-loop load.

* ``ServerProcess`` runs ``python -m guardwire_server serve`` (the ``guardwire serve`` command) on
  127.0.0.1, waits for health SERVING, samples its RSS, and stops it with SIGTERM.
* ``closed_loop``: ``concurrency`` callers, each sending its next request as soon as the
  previous answer arrives (saturation throughput), for at least ``duration_s`` and at least one
  pass over the requests.
* ``open_loop``: Poisson arrivals at ``rate`` per second for ``duration_s``; each request's
  latency runs from its *scheduled* arrival (no coordinated omission: a slow server cannot
  hold back the arrivals).
* ``stream_closed_loop``: the same checks over StreamClassify, one stream per conversation
  (history in ``open``, the assessed turn as a ``turn``) -- only when the server implements it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from guardwire.v1 import conversation_pb2, guard_service_pb2, guard_service_pb2_grpc
from guardwire_tools.bench.rss import RssSampler

__all__ = [
    "PhaseResult",
    "ServerProcess",
    "closed_loop",
    "open_loop",
    "stream_closed_loop",
    "stream_status",
    "to_requests",
]

_ROLE = {"user": conversation_pb2.ROLE_USER, "assistant": conversation_pb2.ROLE_ASSISTANT}
_CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),  # one TCP connection per channel
    ("grpc.max_receive_message_length", 16 * 2**20),
    ("grpc.max_send_message_length", 16 * 2**20),
]


def to_requests(conversations: Sequence[Sequence[tuple[str, str]]]) -> list[object]:
    return [
        guard_service_pb2.ClassifyRequest(
            conversation=conversation_pb2.Conversation(
                turns=[conversation_pb2.Turn(role=_ROLE[r], content=t) for r, t in c]
            )
        )
        for c in conversations
    ]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``python -m guardwire_server serve`` in a subprocess; use as a context manager. ``bare()``:
    the
    gRPC-only reference server (``guardwire_tools.bench.bare_server``) instead."""

    def __init__(
        self, model_dir: Path, options: dict[str, object], log_path: Path, *, timeout_s: float
    ) -> None:
        self.port = _free_port()
        self.target = f"127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "guardwire_server", "serve", "--model", str(model_dir)]
        opts = {"listen": self.target, "log_level": "warning", **options}
        for key, value in opts.items():
            args += ["--" + key.replace("_", "-"), str(value)]
        self.args = args
        self.log_path = log_path
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.rss: RssSampler | None = None

    @classmethod
    def bare(cls, log_path: Path, *, timeout_s: float) -> ServerProcess:
        proc = cls(Path(), {}, log_path, timeout_s=timeout_s)
        proc.args = [
            sys.executable,
            "-m",
            "guardwire_tools.bench.bare_server",
            "--listen",
            proc.target,
        ]
        return proc

    def __enter__(self) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDWIRE_")}
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            asyncio.run(self._wait_serving())
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.rss = RssSampler(self.proc.pid, interval_s=0.05).__enter__()
        return self

    async def _wait_serving(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        async with grpc.aio.insecure_channel(self.target) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"the server exited with {self.proc.returncode}; see {self.log_path}"
                    )
                with contextlib.suppress(grpc.aio.AioRpcError):
                    r = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if r.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the server was not SERVING in {self.timeout_s:.0f} s")
                await asyncio.sleep(0.25)

    def __exit__(self, *exc: object) -> None:
        if self.rss is not None:
            self.rss.__exit__()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@dataclass
class PhaseResult:
    name: str
    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    offered_rps: float | None = None
    batch_sizes: list[int] = field(default_factory=list)
    queue_s: list[float] = field(default_factory=list)  # the server's reported timings
    inference_s: list[float] = field(default_factory=list)
    peak_rss_mb: float | None = None
    note: str = ""

    @property
    def completed(self) -> int:
        return len(self.latencies_s)

    @property
    def rps(self) -> float:
        return self.completed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
        return ordered[k]

    def record(self, latency_s: float, timings: object) -> None:
        self.latencies_s.append(latency_s)
        t: Any = timings
        self.batch_sizes.append(t.batch_size)
        self.queue_s.append(t.queue.ToNanoseconds() / 1e9)
        self.inference_s.append(t.inference.ToNanoseconds() / 1e9)

    def summary(self) -> dict[str, Any]:
        def mean(v: list[float] | list[int]) -> float | None:
            return sum(v) / len(v) if v else None

        return {
            "name": self.name,
            "offered_rps": self.offered_rps,
            "completed": self.completed,
            "rps": self.rps,
            "elapsed_s": self.elapsed_s,
            "p50": self.percentile(50),
            "p99": self.percentile(99),
            "mean_batch": mean(self.batch_sizes),
            "mean_queue_s": mean(self.queue_s),
            "mean_inference_s": mean(self.inference_s),
            "errors": dict(self.errors),
        }

    def error(self, exc: BaseException) -> None:
        code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
        self.errors[code] = self.errors.get(code, 0) + 1


def _channels(target: str, n: int) -> list[grpc.aio.Channel]:
    return [grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS) for _ in range(n)]


async def _close(channels: Sequence[grpc.aio.Channel]) -> None:
    for ch in channels:
        await ch.close()


async def closed_loop(
    target: str,
    requests: Sequence[object],
    *,
    concurrency: int,
    duration_s: float,
    min_requests: int,
    timeout_s: float,
    name: str = "closed",
    channels: int = 1,
    warmup: int = 0,
) -> PhaseResult:
    """``concurrency`` callers back to back; stops taking new requests once ``duration_s`` has
    passed and ``min_requests`` were sent."""
    chans = _channels(target, max(1, min(channels, concurrency)))
    stubs = [guard_service_pb2_grpc.GuardServiceStub(ch) for ch in chans]
    result = PhaseResult(name)
    try:
        if warmup:
            await asyncio.gather(
                *(
                    stubs[i % len(stubs)].Classify(requests[i % len(requests)], timeout=timeout_s)
                    for i in range(warmup)
                ),
                return_exceptions=True,
            )
        counter = iter(range(10**12))
        start = time.perf_counter()

        async def caller(stub: guard_service_pb2_grpc.GuardServiceStub) -> None:
            while True:
                i = next(counter)
                if i >= min_requests and time.perf_counter() - start >= duration_s:
                    return
                t0 = time.perf_counter()
                try:
                    r = await stub.Classify(requests[i % len(requests)], timeout=timeout_s)
                except grpc.aio.AioRpcError as exc:
                    result.error(exc)
                    continue
                result.record(time.perf_counter() - t0, r.timings)

        await asyncio.gather(*(caller(stubs[c % len(stubs)]) for c in range(concurrency)))
        result.elapsed_s = time.perf_counter() - start
    finally:
        await _close(chans)
    return result


def poisson_arrivals(rate: float, duration_s: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    t, out = 0.0, []
    while True:
        t += rng.expovariate(rate)
        if t >= duration_s:
            return out
        out.append(t)


async def open_loop(
    target: str,
    requests: Sequence[object],
    *,
    rate: float,
    duration_s: float,
    timeout_s: float,
    seed: int,
    name: str = "open",
    channels: int = 2,
) -> PhaseResult:
    """Poisson arrivals; latency from the scheduled arrival to the answer."""
    chans = _channels(target, channels)
    stubs = [guard_service_pb2_grpc.GuardServiceStub(ch) for ch in chans]
    result = PhaseResult(name, offered_rps=rate)
    arrivals = poisson_arrivals(rate, duration_s, seed)

    async def one(n: int, due: float) -> None:
        try:
            r = await stubs[n % len(stubs)].Classify(requests[n % len(requests)], timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            result.error(exc)
            return
        result.record(time.perf_counter() - due, r.timings)

    try:
        start = time.perf_counter()
        tasks = []
        for n, offset in enumerate(arrivals):
            due = start + offset
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n, due)))
        await asyncio.gather(*tasks)
        result.elapsed_s = time.perf_counter() - start
    finally:
        await _close(chans)
    return result


def _stream_messages(
    conversation: guard_service_pb2.ClassifyRequest,
) -> list[guard_service_pb2.StreamClassifyRequest]:
    turns = list(conversation.conversation.turns)
    history = conversation_pb2.Conversation(turns=turns[:-1])
    return [
        guard_service_pb2.StreamClassifyRequest(open=guard_service_pb2.StreamOpen(history=history)),
        guard_service_pb2.StreamClassifyRequest(turn=turns[-1]),
    ]


async def stream_status(target: str, request: object, timeout_s: float) -> str:
    """ "ok" when StreamClassify answers a check, else why not (e.g. "UNIMPLEMENTED: ...")."""
    async with grpc.aio.insecure_channel(target) as ch:
        stub = guard_service_pb2_grpc.GuardServiceStub(ch)
        try:
            answers = [
                a
                async for a in stub.StreamClassify(
                    iter(_stream_messages(request)), timeout=timeout_s
                )
            ]
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    return "ok" if answers else "no answer"


async def stream_closed_loop(
    target: str,
    requests: Sequence[object],
    *,
    concurrency: int,
    duration_s: float,
    min_requests: int,
    timeout_s: float,
) -> PhaseResult:
    """Like ``closed_loop``, one short stream per check."""
    chans = _channels(target, 1)
    stub = guard_service_pb2_grpc.GuardServiceStub(chans[0])
    result = PhaseResult("stream")
    counter = iter(range(10**12))
    start = time.perf_counter()

    async def caller() -> None:
        while True:
            i = next(counter)
            if i >= min_requests and time.perf_counter() - start >= duration_s:
                return
            t0 = time.perf_counter()
            try:
                msgs = _stream_messages(requests[i % len(requests)])
                answers = [a async for a in stub.StreamClassify(iter(msgs), timeout=timeout_s)]
            except grpc.aio.AioRpcError as exc:
                result.error(exc)
                continue
            if not answers:
                result.errors["no answer"] = result.errors.get("no answer", 0) + 1
                continue
            result.record(time.perf_counter() - t0, answers[-1].result.timings)

    try:
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        result.elapsed_s = time.perf_counter() - start
    finally:
        await _close(chans)
    return result
