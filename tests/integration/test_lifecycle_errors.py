"""Operator faults at start-up: one clear line ("guardwire: configuration error: ...") and exit
status 2, never a traceback -- a busy port (also against a second server: gRPC's default
SO_REUSEPORT must not let two servers share a port), a Unix socket in a missing or read-only
directory, a host that does not resolve, a TLS key that is not the certificate's.

Each case runs ``python -m guardwire_server serve`` with the fake backend in a subprocess."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_server

PREFIX = "guardwire: configuration error: "


def _serve(model_dir: Path, *flags: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs the server, expecting it to refuse to start (a server that starts is killed when
    ``timeout`` runs out, and the test fails)."""
    cmd = [sys.executable, "-m", "guardwire_server", "serve", "--backend", "fake"]
    cmd += ["--model", str(model_dir), *flags]
    try:
        return subprocess.run(
            cmd, cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server started instead of refusing: {flags}")


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith(PREFIX)]
    assert len(lines) == 1, proc.stderr
    return lines[0]


async def test_a_second_server_on_the_same_port_fails_to_start(tiny_model_dir: Path) -> None:
    async with run_server(tiny_model_dir, backend="fake") as first:
        proc = await asyncio.to_thread(_serve, tiny_model_dir, "--listen", first.target)
    line = _one_error_line(proc)
    assert first.target in line and "already in use" in line


def test_a_port_held_by_another_process_is_a_clear_error(tiny_model_dir: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        line = _one_error_line(_serve(tiny_model_dir, "--listen", f"127.0.0.1:{port}"))
    assert f"127.0.0.1:{port}" in line and "already in use" in line


def test_an_unresolvable_host_is_a_clear_error(tiny_model_dir: Path) -> None:
    line = _one_error_line(_serve(tiny_model_dir, "--listen", "no-such-host.invalid:50051"))
    assert "cannot resolve the host 'no-such-host.invalid'" in line


def test_a_unix_socket_in_a_missing_directory_is_a_clear_error(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "missing"
    line = _one_error_line(_serve(tiny_model_dir, "--listen", f"unix:{missing}/guard.sock"))
    assert f"the directory '{missing}' does not exist" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")
def test_a_unix_socket_in_a_read_only_directory_is_a_clear_error(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    line = _one_error_line(_serve(tiny_model_dir, "--listen", f"unix:{ro}/guard.sock"))
    assert f"the directory '{ro}' is not writable" in line


@pytest.mark.parametrize(
    "flags",
    [
        ("--max-wait-ms", "0"),
        ("--max-wait-ms", "inf"),
        ("--drain-grace-s", "nan"),
        ("--inference-timeout-s", "inf"),
    ],
)
def test_bad_numbers_fail_validation_before_the_model_loads(
    tmp_path: Path, flags: tuple[str, str]
) -> None:
    # the model dir does not exist: validation must refuse the value before any load
    line = _one_error_line(_serve(tmp_path / "no-model", *flags))
    assert flags[0].removeprefix("--").replace("-", "_") in line


def test_non_finite_floats_from_yaml_are_refused(tmp_path: Path) -> None:
    from guardwire_server.config import ConfigError, load_config_file, resolve_settings

    config = tmp_path / "guardwire.yaml"
    for text in ("max_wait_ms: .inf\n", "threshold: .nan\n", "drain_quiet_s: .inf\n"):
        config.write_text(text)
        with pytest.raises(ConfigError, match="must be"):
            resolve_settings(file_data=load_config_file(config))
