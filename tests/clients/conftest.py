"""Fixtures of the other-language client tests (marker ``clients``; run as their own CI step
after ``scripts/install-client-toolchains``):

- ``real_server``: the real Guardwire server (``python -m guardwire_server serve --demo --backend
fake``)
  as a subprocess on a free 127.0.0.1 port, once per session, ready when its health service
  reports SERVING.
- ``stub_server``: the stand-in of stub_server.py (RetryInfo behaviour on demand).
- ``example``: each language's example CLI, built once per session (skips with the install
  command when the toolchain is missing).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.clients.stub_server import StubServer

REPO = Path(__file__).resolve().parents[2]
CLIENTS = REPO / "clients"
LANGS = ("go", "typescript", "java", "cpp")
SERVICE = "guardwire.v1.GuardService"
SERVER_START_TIMEOUT_S = float(os.environ.get("GUARDWIRE_CLIENTS_SERVER_TIMEOUT", "180"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serving(target: str, timeout: float = 1.0) -> bool:
    with grpc.insecure_channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        try:
            for name in (SERVICE, ""):
                resp = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=timeout)
                if resp.status != health_pb2.HealthCheckResponse.SERVING:
                    return False
        except grpc.RpcError:
            return False
    return True


@dataclass
class Server:
    target: str
    log: Path


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real server with the deterministic fake backend, on loopback. The port is picked
    free beforehand (a subprocess cannot report an ephemeral port back); a lost race for it
    is retried on another port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDWIRE_")}
    log_dir = tmp_path_factory.mktemp("real-server")
    for attempt in range(3):
        target = f"127.0.0.1:{free_port()}"
        log = log_dir / f"server-{attempt}.log"
        cmd = [sys.executable, "-m", "guardwire_server", "serve", "--demo", "--backend", "fake"]
        cmd += ["--listen", target]
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + SERVER_START_TIMEOUT_S
            while not _serving(target):
                if proc.poll() is not None:
                    text = log.read_text(errors="replace")
                    if "Failed to bind" in text and attempt < 2:
                        break  # lost the port race: next attempt
                    pytest.fail(f"{' '.join(cmd)} exited with {proc.returncode}:\n{text[-4000:]}")
                if time.monotonic() > deadline:
                    text = log.read_text(errors="replace")
                    pytest.fail(f"not SERVING after {SERVER_START_TIMEOUT_S:.0f}s:\n{text[-4000:]}")
                time.sleep(0.2)
            else:
                yield Server(target=target, log=log)
                return
        finally:
            _stop(proc)


@pytest.fixture(scope="session")
def stub_server() -> Iterator[StubServer]:
    with StubServer() as s:
        yield s


@pytest.fixture(scope="session")
def dead_target() -> str:
    """An address where nothing listens (a guard that is down)."""
    return f"127.0.0.1:{free_port()}"


# --- building the examples -------------------------------------------------------------------


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 280) -> str:
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _missing(*tools: str) -> list[str]:
    """The tools (command names, or absolute paths) that are not there."""
    return [t for t in tools if not (Path(t).exists() if "/" in t else shutil.which(t))]


def _install_hint(lang: str) -> str:
    return f"run scripts/install-client-toolchains {lang}"


def _build_go(out: Path) -> list[str]:
    missing = _missing("go", "/usr/share/gocode/src/google.golang.org/grpc/go.mod")
    if missing:
        pytest.skip(f"Go toolchain missing ({', '.join(missing)}): {_install_hint('go')}")
    gomod = Path("/usr/share/gocode/src/github.com/golang/protobuf/go.mod")
    if not gomod.exists() or "google.golang.org/protobuf" not in gomod.read_text():
        pytest.skip(
            "Debian golang-github-golang-protobuf-1-3-dev is installed instead of -1-5-dev "
            f"(stubs would panic at run time): {_install_hint('go')}"
        )
    src = CLIENTS / "go"
    env = {
        **os.environ,
        "GOWORK": str(src / "debian.work"),
        "GOPROXY": "off",
        "GOFLAGS": "",
        "GOSUMDB": "off",
        "GOTOOLCHAIN": "local",
    }
    unformatted = _run(["gofmt", "-l", "guardwire", "cmd"], src, env)
    assert not unformatted.strip(), f"gofmt: {unformatted}"
    _run(["go", "vet", "./..."], src, env)
    _run(["go", "test", "./..."], src, env)  # unit tests: error decoding, Decision, retries
    _run(["go", "build", "-o", str(out / "guardwire-example"), "./cmd/guardwire-example"], src, env)
    return [str(out / "guardwire-example")]


def _build_typescript(out: Path) -> list[str]:
    src = CLIENTS / "typescript"
    if _missing("node"):
        pytest.skip(f"node missing: install Node.js >= 18, then {_install_hint('typescript')}")
    tsc = src / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        pytest.skip(f"clients/typescript/node_modules missing: {_install_hint('typescript')}")
    _run([str(tsc), "-p", "."], src)
    return ["node", str(src / "dist" / "example.js")]


def _build_java(out: Path) -> list[str]:
    src = CLIENTS / "java"
    if _missing("javac", "java", "/usr/share/java/grpc-netty.jar", "/usr/share/java/protobuf.jar"):
        pytest.skip(f"Java toolchain or Debian grpc-java jars missing: {_install_hint('java')}")
    _run(["./build.sh"], src)
    return [str(src / "run-example.sh")]


def _build_cpp(out: Path) -> list[str]:
    src = CLIENTS / "cpp"
    if (
        _missing("g++", "make", "pkg-config")
        or subprocess.run(["pkg-config", "--exists", "grpc++", "protobuf"], check=False).returncode
    ):
        pytest.skip(f"C++ toolchain or libgrpc++-dev missing: {_install_hint('cpp')}")
    _run(["make", "-j2", "--no-print-directory"], src, timeout=600)
    return [str(src / "build" / "guardwire-example")]


_BUILDERS = {
    "go": _build_go,
    "typescript": _build_typescript,
    "java": _build_java,
    "cpp": _build_cpp,
}
_built: dict[str, list[str]] = {}


@pytest.fixture(params=LANGS)
def lang(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class ExampleRun:
    returncode: int
    stdout: str
    stderr: str
    result: dict[str, Any]


class Example:
    """One language's example CLI (built once per session)."""

    def __init__(self, lang: str, cmd: list[str]) -> None:
        self.lang = lang
        self.cmd = cmd

    def run(self, *args: str, timeout: float = 120) -> ExampleRun:
        proc = subprocess.run(
            [*self.cmd, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        assert lines, (
            f"{self.lang} example printed no RESULT line (exit {proc.returncode}):\n"
            f"{proc.stdout}\n{proc.stderr}"
        )
        return ExampleRun(proc.returncode, proc.stdout, proc.stderr, json.loads(lines[-1][7:]))


@pytest.fixture
def example(lang: str, tmp_path_factory: pytest.TempPathFactory) -> Example:
    if lang not in _built:
        _built[lang] = _BUILDERS[lang](tmp_path_factory.mktemp(f"build-{lang}"))
    return Example(lang, _built[lang])
