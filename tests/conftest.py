"""Shared fixtures: clean environment, the ../shared reference folder, a tiny test model built
once per session, and real gRPC servers on loopback (TCP on an ephemeral port, and a Unix socket).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from guardwire_server.config import Settings, resolve_settings

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
LLAMA3_TOKENIZER = SHARED / "reference" / "tokenizers" / "llama3"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("GUARDWIRE_"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"reference folder {SHARED} is absent (CI has it beside the checkout)")
    return SHARED


def _tokenizer_source() -> Path | None:
    return LLAMA3_TOKENIZER if (LLAMA3_TOKENIZER / "tokenizer.json").is_file() else None


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Llama Guard 3 (1B format) model directory, rigged to answer
    safe/unsafe so it passes the load probe. Uses the real Llama 3 tokenizer when ../shared
    is present, else the built-in trained tokenizer."""
    from guardwire_tools.tiny_model import make_test_model

    out = tmp_path_factory.mktemp("tiny-lg3")
    make_test_model(out, tokenizer_dir=_tokenizer_source())
    return out


def make_settings(**overrides: Any) -> Settings:
    flags = {"listen": ["127.0.0.1:0"], "max_wait_ms": 2.0, **overrides}
    return resolve_settings(flags=flags, env={}, file_data={})


@dataclass
class RunningServer:
    server: Any  # guardwire_server.app.GuardServer
    target: str  # host:port
    uds_target: str | None
    backend: str = ""
    model_dir: Path | None = None


@contextlib.asynccontextmanager
async def run_server(
    model_dir: Path,
    *,
    uds: bool = False,
    load: bool = True,
    backend_options: dict[str, Any] | None = None,
    **overrides: Any,
) -> AsyncIterator[RunningServer]:
    """Starts a real grpc.aio GuardServer on loopback (and a Unix socket if asked)."""
    from guardwire_server.app import GuardServer

    with tempfile.TemporaryDirectory(prefix="gw-sock-") as sock_dir:
        listen = ["127.0.0.1:0"]
        if uds:
            listen.append(f"unix:{sock_dir}/guard.sock")
        settings = make_settings(listen=listen, **overrides)
        server = GuardServer(settings, model_dir=model_dir, backend_options=backend_options)
        await server.start()
        try:
            if load:
                await server.load()
            tcp = next(a for a in server.addresses if not a.startswith("unix:"))
            uds_addr = next((a for a in server.addresses if a.startswith("unix:")), None)
            yield RunningServer(server=server, target=tcp, uds_target=uds_addr)
        finally:
            await server.drain(0)


@pytest.fixture(scope="session", params=["torch", "onnxruntime"])
async def guard_server(
    request: pytest.FixtureRequest,
    tiny_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[RunningServer]:
    """One real server per backend for the session: tiny model, TCP + Unix socket. Every test
    that uses it runs against PyTorch and against ONNX Runtime (an export of the same model)."""
    model_dir = tiny_model_dir
    if request.param == "onnxruntime":
        from tests.parity.conftest import exported_onnx_dir  # skips without the onnx extra

        model_dir = exported_onnx_dir(tiny_model_dir, tmp_path_factory)
    async with run_server(model_dir, uds=True, backend=request.param) as running:
        running.backend, running.model_dir = request.param, model_dir
        yield running


@pytest.fixture(scope="session")
async def fake_server(tiny_model_dir: Path) -> AsyncIterator[RunningServer]:
    """A real server with the deterministic fake backend (tokenizer from the tiny model)."""
    async with run_server(tiny_model_dir, backend="fake") as running:
        yield running
