"""The Python client's three-valued outcome: SAFE | UNSAFE | UNAVAILABLE (with the reason),
an explicit fail mode, every UNAVAILABLE logged and counted -- never a silent safe."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from guardwire import AsyncGuardClient, FailMode, GuardClient, OutcomeKind
from guardwire.client import RetryPolicy
from tests.conftest import run_server

ONE_TRY = RetryPolicy(max_attempts=1)


def dead_target() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


async def test_verdicts(fake_server) -> None:
    async with AsyncGuardClient(fake_server.target) as client:
        safe = await client.check("How do I bake bread?", fail_mode="closed", threshold=0.99)
        unsafe = await client.check("GW_TEST_UNSAFE", fail_mode=FailMode.OPEN)
    assert safe.kind is OutcomeKind.SAFE and safe.allowed and safe.result is not None
    assert unsafe.kind is OutcomeKind.UNSAFE and not unsafe.allowed
    assert not unsafe.allowed  # fail-open never lets an UNSAFE verdict through
    assert safe.reason == "" and client.unavailable.total == 0


@pytest.mark.parametrize(("mode", "allowed"), [("closed", False), ("open", True)])
async def test_unreachable_guard_is_unavailable(mode: str, allowed: bool, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="guardwire")
    async with AsyncGuardClient(dead_target(), timeout=2.0, retry=ONE_TRY) as client:
        outcome = await client.check("hello", fail_mode=mode)
    assert outcome.kind is OutcomeKind.UNAVAILABLE and outcome.unavailable
    assert outcome.allowed is allowed and outcome.result is None
    assert outcome.reason.startswith("UNAVAILABLE")
    assert client.unavailable.total == 1
    assert (client.unavailable.passed, client.unavailable.blocked) == (
        (1, 0) if allowed else (0, 1)
    )
    assert client.unavailable.by_reason["UNAVAILABLE"] == 1
    assert "guard unavailable" in caplog.text and f"fail-{mode}" in caplog.text


async def test_draining_guard_is_unavailable_with_the_reason(tiny_model_dir) -> None:
    async with run_server(tiny_model_dir, backend="fake") as srv:
        srv.server.draining = True  # what drain() sets first
        async with AsyncGuardClient(srv.target, retry=ONE_TRY) as client:
            outcome = await client.check("hello", fail_mode="closed")
        srv.server.draining = False
    assert outcome.kind is OutcomeKind.UNAVAILABLE and not outcome.allowed
    assert outcome.error is not None and outcome.error.reason == "DRAINING"
    assert "DRAINING" in outcome.reason and client.unavailable.by_reason["DRAINING"] == 1


async def test_rejected_request_is_unavailable_not_safe(fake_server) -> None:
    async with AsyncGuardClient(fake_server.target) as client:
        outcome = await client.check("x" * 70000, fail_mode="open")
    assert outcome.kind is OutcomeKind.UNAVAILABLE and outcome.allowed
    assert outcome.error is not None and outcome.error.reason == "LIMIT_EXCEEDED"


async def test_fail_mode_must_be_chosen() -> None:
    async with AsyncGuardClient(dead_target()) as client:
        with pytest.raises(TypeError):
            await client.check("hello")  # type: ignore[call-arg]
        with pytest.raises(ValueError, match="fail_mode"):
            await client.check("hello", fail_mode="maybe")
    assert client.unavailable.total == 0


async def test_blocking_client(fake_server) -> None:
    """The blocking client, run in a worker thread (the server shares this event loop)."""

    def work() -> tuple:
        with GuardClient(fake_server.target) as client:
            safe = client.check("hello", fail_mode="closed", threshold=0.99)
        with GuardClient(dead_target(), timeout=2.0, retry=ONE_TRY) as client:
            down = client.check("hello", fail_mode="open")
            count = client.unavailable.total
        return safe, down, count

    safe, down, count = await asyncio.to_thread(work)
    assert safe.kind is OutcomeKind.SAFE and safe.allowed
    assert down.kind is OutcomeKind.UNAVAILABLE and down.allowed and count == 1
    with GuardClient(dead_target()) as client, pytest.raises(TypeError):
        client.check("hello")  # type: ignore[call-arg]
