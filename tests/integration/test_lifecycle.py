"""Health, reflection, readiness, overload, deadlines, drain, load probe, CLI over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import REPO, run_server
from tests.integration.helpers import U, details, request, stub

SERVICE = "guardwire.v1.GuardService"


async def health_status(target: str, service: str = SERVICE) -> int:
    async with grpc.aio.insecure_channel(target) as ch:
        r = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return r.status


async def test_health_follows_readiness_and_model_not_ready(tiny_model_dir):
    async with run_server(tiny_model_dir, load=False) as srv:
        assert await health_status(srv.target) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await health_status(srv.target, "") == health_pb2.HealthCheckResponse.NOT_SERVING
        async with grpc.aio.insecure_channel(srv.target) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub(ch).Classify(request((U, "hi")), timeout=5)
        d = details(info.value)
        assert d["code"] == grpc.StatusCode.UNAVAILABLE and d["reason"] == "MODEL_NOT_READY"
        await srv.server.load()
        assert await health_status(srv.target) == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_services(guard_server):
    async with grpc.aio.insecure_channel(guard_server.target) as ch:
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)

        async def reqs():
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names = []
        async for resp in refl.ServerReflectionInfo(reqs()):
            names = [s.name for s in resp.list_services_response.service]
    assert SERVICE in names and "grpc.health.v1.Health" in names


async def test_overload_is_rejected_fast_with_retry_info(tiny_model_dir):
    async with run_server(
        tiny_model_dir,
        backend="fake",
        max_queue=2,
        max_batch_size=1,
        backend_options={"delay_s": 0.3},
    ) as srv:
        async with grpc.aio.insecure_channel(srv.target) as ch:
            s = stub(ch)
            calls = [s.Classify(request((U, f"q{i}")), timeout=20) for i in range(8)]
            t0 = time.monotonic()
            results = await asyncio.gather(*calls, return_exceptions=True)
    ok = [r for r in results if not isinstance(r, Exception)]
    errs = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) + len(errs) == 8 and len(ok) >= 2 and errs
    for e in errs:
        d = details(e)
        assert d["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED and d["reason"] == "OVERLOADED"
        assert d["retry_s"] and d["retry_s"] > 0
    assert time.monotonic() - t0 < 8 * 0.3  # rejections did not wait for inference


async def test_deadline_expired_in_queue_is_not_scored(tiny_model_dir):
    async with run_server(
        tiny_model_dir, backend="fake", max_batch_size=1, backend_options={"delay_s": 0.5}
    ) as srv:
        fake = srv.server.guard.backend
        before = fake.calls if hasattr(fake, "calls") else None
        async with grpc.aio.insecure_channel(srv.target) as ch:
            s = stub(ch)
            slow = asyncio.ensure_future(s.Classify(request((U, "first")), timeout=10))
            await asyncio.sleep(0.05)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await s.Classify(request((U, "second")), timeout=0.2)
            await slow
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    if before is not None:
        assert fake.calls - before == 1  # only "first" reached the backend


async def test_drain_finishes_in_flight_and_refuses_new_calls(tiny_model_dir):
    async with run_server(
        tiny_model_dir, backend="fake", max_batch_size=1, backend_options={"delay_s": 0.3}
    ) as srv:
        async with grpc.aio.insecure_channel(srv.target) as ch:
            s = stub(ch)
            in_flight = [
                asyncio.ensure_future(s.Classify(request((U, f"q{i}")), timeout=10))
                for i in range(3)
            ]
            await asyncio.sleep(0.1)
            drain = asyncio.ensure_future(srv.server.drain(5.0))
            await asyncio.sleep(0.05)
            assert await health_status(srv.target) == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await s.Classify(request((U, "late")), timeout=5)
            results = await asyncio.gather(*in_flight)
            await drain
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(results) == 3 and all(r.verdict for r in results)


async def test_drain_refuses_callers_until_they_go_quiet_then_closes(tiny_model_dir):
    """Calls that keep coming after SIGTERM all get UNAVAILABLE / DRAINING from the handler:
    the port closes only once none arrived for drain_quiet_s (gRPC core would answer CANCELLED
    to a call racing the close), and no later than the grace period."""
    quiet, sending_s = 0.3, 1.0
    async with run_server(tiny_model_dir, backend="fake", drain_quiet_s=quiet) as srv:
        async with grpc.aio.insecure_channel(srv.target) as ch:
            s = stub(ch)
            await s.Classify(request((U, "warm")), timeout=5)
            t0 = time.monotonic()
            drain = asyncio.ensure_future(srv.server.drain(10.0))
            codes, reasons, last_sent = [], set(), 0.0
            while time.monotonic() - t0 < sending_s:
                last_sent = time.monotonic() - t0
                try:
                    await s.Classify(request((U, "late")), timeout=5)
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as err:
                    codes.append(err.code())
                    reasons.add(details(err)["reason"])
                await asyncio.sleep(0.05)
                assert not drain.done(), "closed while callers were still sending"
            await drain
            closed_after = time.monotonic() - t0
    assert len(codes) >= 10 and set(codes) == {grpc.StatusCode.UNAVAILABLE}
    assert reasons == {"DRAINING"}
    assert last_sent + quiet * 0.9 <= closed_after < sending_s + quiet + 2.0


async def test_drain_closes_under_steady_traffic_after_ten_quiet_periods(tiny_model_dir):
    """Callers that never go quiet need the close (its GOAWAY) to move to another replica: the
    drain waits for quiet at most QUIET_WAIT_FACTOR x drain_quiet_s, not the whole grace."""
    from guardwire_server.app import QUIET_WAIT_FACTOR

    quiet = 0.1
    async with run_server(tiny_model_dir, backend="fake", drain_quiet_s=quiet) as srv:
        async with grpc.aio.insecure_channel(srv.target) as ch:
            s = stub(ch)

            async def steady() -> None:
                while True:
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await s.Classify(request((U, "steady")), timeout=5)
                    await asyncio.sleep(0.02)

            sender = asyncio.ensure_future(steady())
            await asyncio.sleep(0.2)
            t0 = time.monotonic()
            await srv.server.drain(20.0)
            took = time.monotonic() - t0
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
    assert QUIET_WAIT_FACTOR * quiet == 1.0
    assert took < 3.0  # about QUIET_WAIT_FACTOR * quiet after the signal, not the 20 s grace


async def test_drain_quiet_period_is_bounded_by_the_grace(tiny_model_dir):
    async with run_server(tiny_model_dir, backend="fake", drain_quiet_s=30.0) as srv:
        async with grpc.aio.insecure_channel(srv.target) as ch:
            await stub(ch).Classify(request((U, "just before")), timeout=5)
        t0 = time.monotonic()
        await srv.server.drain(0.5)
    assert 0.4 <= time.monotonic() - t0 < 3.0  # waited for quiet, but only for the grace


def test_load_probe_refuses_an_unrigged_model(tmp_path):
    from guardwire_backends.base import BackendStartError
    from guardwire_server.loading import build_guard
    from guardwire_tools.tiny_model import make_test_model
    from tests.conftest import LLAMA3_TOKENIZER, make_settings

    tok = LLAMA3_TOKENIZER if (LLAMA3_TOKENIZER / "tokenizer.json").is_file() else None
    make_test_model(tmp_path, tokenizer_dir=tok, rigged=False)
    with pytest.raises(BackendStartError, match="load probe failed"):
        build_guard(make_settings(), tmp_path)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_serve_demo_then_classify_then_sigterm(tmp_path):
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "guardwire_server",
            "serve",
            "--demo",
            "--listen",
            f"127.0.0.1:{port}",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        out = None
        while time.monotonic() < deadline:
            r = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "guardwire_server",
                    "classify",
                    "hello",
                    "--target",
                    f"127.0.0.1:{port}",
                    "--timeout",
                    "5",
                ],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
            )
            if r.returncode == 0:
                out = r.stdout
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(1)
        assert out is not None, "server never answered"
        assert out.split()[0] in ("SAFE", "UNSAFE") and "unsafe_score=" in out
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        log = proc.stdout.read()
        assert "NOT a safety model" in log
        assert "hello" not in log  # conversation text is never logged
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


async def test_fake_backend_trigger_text_gives_unsafe(fake_server):
    async with grpc.aio.insecure_channel(fake_server.target) as ch:
        s = stub(ch)
        for text in ("GW_TEST_UNSAFE", "please GW_TEST_UNSAFE now", "x\nGW_TEST_UNSAFE"):
            r = await s.Classify(request((U, text)), timeout=10)
            assert r.unsafe_score > 0.99, text


def test_demo_model_without_reference_folder_passes_the_probe(tmp_path, monkeypatch):
    """Inside the container there is no ../shared: the trained tokenizer and our own renderer
    must still give a test model that passes the load probe."""
    import guardwire_tools.tiny_model as tiny
    from guardwire_server.loading import build_guard
    from tests.conftest import make_settings

    monkeypatch.setattr(tiny, "default_tokenizer_dir", lambda: None)
    monkeypatch.setattr(tiny, "_REFERENCE", tmp_path / "absent")
    tiny.make_test_model(tmp_path / "m")
    guard = build_guard(make_settings(), tmp_path / "m")
    assert guard.adapter.family == "llama-guard-3-1b"
