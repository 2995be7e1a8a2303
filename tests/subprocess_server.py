"""A real Guardwire server in its own process, for the load and fuzz suites.

Its own process so that the load generator (or Hypothesis) and the server do not share a GIL or
an event loop, its memory (RSS) can be measured alone, a crash shows as a dead process, and
SIGTERM exercises the real signal path (``guardwire_server.app.serve``: drain, exit status 0).

    python -m tests.subprocess_server MODEL_DIR 127.0.0.1:PORT [--set key=value ...]
        [--backend-options JSON]

From a test::

    with spawn_server(model_dir, backend_options={"delay_s": 0.05}, max_batch_size=4) as srv:
        srv.target, srv.pid, srv.rss_bytes()
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def main(argv: Sequence[str] | None = None) -> int:
    from guardwire_server.app import serve
    from guardwire_server.config import resolve_settings

    parser = argparse.ArgumentParser(prog="tests.subprocess_server")
    parser.add_argument("model_dir")
    parser.add_argument("listen")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--backend-options", default="{}")
    parser.add_argument(
        "--hang-on-text", default="", help="a batch whose prompt contains TEXT hangs for an hour"
    )
    args = parser.parse_args(argv)
    flags: dict[str, Any] = {"listen": args.listen, "backend": "fake", "log_level": "warning"}
    for item in args.set:
        key, _, value = item.partition("=")
        flags[key] = value
    settings = resolve_settings(flags=flags, env={}, file_data={})
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    options = json.loads(args.backend_options)
    if args.hang_on_text:
        options["fail_when"] = _hang_on(Path(args.model_dir), args.hang_on_text)
    return asyncio.run(serve(settings, model_dir=Path(args.model_dir), backend_options=options))


def _hang_on(model_dir: Path, text: str) -> Any:
    """A FakeBackend ``fail_when`` that blocks (a hung GPU call) on a batch containing the
    tokens of `` text``; every other batch runs normally."""
    from guardwire_server.adapters.tokenization import Tokenizer

    needle = tuple(Tokenizer.from_dir(model_dir).encode_text(" " + text))

    def hang(items: Any) -> bool:
        for item in items:
            tail = tuple(item.tail_ids)
            if any(tail[i : i + len(needle)] == needle for i in range(len(tail))):
                time.sleep(3600)
        return False

    return hang


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    target: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_bytes(self) -> int:
        """Resident set size of the server process (Linux /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("VmRSS not found")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


def wait_serving(target: str, timeout: float = 180.0, proc: subprocess.Popen[bytes] | None = None):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {proc.returncode}")
            try:
                r = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"the server at {target} did not become SERVING in {timeout}s")


@contextlib.contextmanager
def spawn_server(
    model_dir: Path,
    *,
    backend_options: dict[str, Any] | None = None,
    hang_on_text: str = "",
    **settings: Any,
) -> Iterator[ServerProcess]:
    """Starts ``python -m tests.subprocess_server`` on a free loopback port, waits for health
    SERVING, yields it, and stops it (SIGTERM, then SIGKILL) on exit."""
    port = free_port()
    target = f"127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "tests.subprocess_server", str(model_dir), target]
    for key, value in settings.items():
        cmd += ["--set", f"{key}={value}"]
    cmd += ["--backend-options", json.dumps(backend_options or {})]
    if hang_on_text:
        cmd += ["--hang-on-text", hang_on_text]
    with tempfile.NamedTemporaryFile(prefix="gw-server-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDWIRE_")}
    with log_path.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = ServerProcess(proc=proc, target=target, log_path=log_path)
    try:
        wait_serving(target, proc=proc)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(OSError):
            log_path.unlink()


if __name__ == "__main__":
    raise SystemExit(main())
