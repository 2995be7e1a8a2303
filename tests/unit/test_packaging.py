"""Packaging: two distributions, import names under ``guardwire``, and import graphs that keep
the offline tools out of the server and the server out of the backends (issue 13)."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "numpy", "tokenizers", "transformers", "yaml")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"),
            *("-w", str(out), str(REPO), str(REPO / "clients" / "python")),
        ],
        check=True,
    )
    found = {p.name.split("-")[0]: p for p in out.glob("*.whl")}
    assert set(found) == {"guardwire", "guardwire_client"}, found
    return found


def _top_level(wheel: Path) -> set[str]:
    names = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    return {n for n in names if not n.endswith((".dist-info", ".data"))}


def _requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    return [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Requires-Dist:")]


def test_server_wheel_installs_only_guardwire_names(wheels: dict[str, Path]) -> None:
    top = _top_level(wheels["guardwire"])
    assert top == {"guardwire_server", "guardwire_backends", "guardwire_tools"}
    assert all(name.startswith("guardwire") for name in top), top
    assert "guardwire-client==0.1.0" in _requires(wheels["guardwire"])


def test_client_wheel_is_the_client_alone(wheels: dict[str, Path]) -> None:
    assert _top_level(wheels["guardwire_client"]) == {"guardwire"}
    plain = [r for r in _requires(wheels["guardwire_client"]) if "extra ==" not in r]
    names = sorted(r.split(">")[0].split("=")[0].split("<")[0].strip() for r in plain)
    assert names == ["grpcio", "grpcio-status", "protobuf"]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
        check=True,
        capture_output=True,
        text=True,
        cwd="/",
    ).stdout
    return set(out.split())


def test_server_core_does_not_import_the_offline_tools() -> None:
    mods = _modules_after(
        "import guardwire_server.app, guardwire_server.cli, guardwire_server.guard, "
        "guardwire_server.loading, guardwire_server.servicer, guardwire_server.streams"
    )
    assert "guardwire_server.app" in mods
    assert not {m for m in mods if m.startswith("guardwire_tools")}


def test_backends_never_import_the_server() -> None:
    # statically: no module of the backends names guardwire_server or guardwire_tools
    for path in (REPO / "backends" / "guardwire_backends").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("guardwire_server", "guardwire_tools")), path
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith(("guardwire_server", "guardwire_tools"))
    # and at run time
    mods = _modules_after(
        "import guardwire_backends.registry, guardwire_backends.fake, "
        "guardwire_backends.torch_hf, guardwire_backends.onnxruntime_ort"
    )
    assert "guardwire_backends.torch_hf" in mods
    assert not {m for m in mods if m.startswith(("guardwire_server", "guardwire_tools"))}


def test_the_client_imports_nothing_heavy() -> None:
    mods = _modules_after("import guardwire, guardwire.streaming, guardwire.v1.guard_service_pb2")
    assert "guardwire.client" in mods
    assert not {m for m in mods if m.split(".")[0] in HEAVY}
    assert not {m for m in mods if m.startswith(("guardwire_server", "guardwire_backends"))}
