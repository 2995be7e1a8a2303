"""The tiny test model exported to ONNX once per test session (shared with other test dirs
through :func:`exported_onnx_dir`, which caches the export per process)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

_EXPORTS: dict[str, Path] = {}


def exported_onnx_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Export ``model_dir`` (fp32, validated) once per process and return the ONNX dir.

    Skips when the ``onnx`` extra (onnxruntime(-gpu), onnx, onnxscript) is not installed.
    """
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    key = str(Path(model_dir).resolve())
    if key not in _EXPORTS:
        from guardwire_tools.export_onnx import export_onnx

        out = tmp_path_factory.mktemp("tiny-lg3-onnx")
        export_onnx(model_dir, out, dtype="fp32")
        _EXPORTS[key] = out
    return _EXPORTS[key]


@pytest.fixture(scope="session")
def onnx_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny Llama Guard 3 model (``tiny_model_dir``) as a validated ONNX dir."""
    return exported_onnx_dir(tiny_model_dir, tmp_path_factory)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """One torch intra-op thread (restored after): on a shared CI machine torch's spinning
    OpenMP threads make tiny forwards ~15x slower under contention."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
