"""Backend registry, lazy optional imports and device/dtype resolution."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from guardwire_backends._optional import require
from guardwire_backends.base import BackendError, BackendStartError, WeightsNotFound
from guardwire_backends.fake import FakeBackend
from guardwire_backends.registry import available_backends, load_backend

REPO = Path(__file__).resolve().parents[3]


def test_available_names() -> None:
    assert available_backends() == ("fake", "onnxruntime", "torch")


def test_unknown_backend_lists_names() -> None:
    with pytest.raises(ValueError, match="fake, onnxruntime, torch"):
        load_backend("tensorflow", "x")


def test_fake_loader_passes_options() -> None:
    backend = load_backend("fake", "m", delay_s=0.0, max_batch_size=3)
    assert isinstance(backend, FakeBackend)
    assert backend.info.model_ref == "m" and backend.capabilities.max_batch_size == 3


def test_onnxruntime_missing_model_is_a_backend_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError):  # WeightsNotFound, or BackendStartError without the extra
        load_backend("onnxruntime", str(tmp_path / "missing"))


def test_torch_loader_missing_model(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    with pytest.raises(WeightsNotFound):
        load_backend("torch", str(tmp_path / "missing"), device="cpu")


def test_registry_and_devices_do_not_import_torch() -> None:
    code = (
        "import sys, guardwire_backends.registry, guardwire_backends.devices, "
        "guardwire_backends.fake, guardwire_backends.torch_hf; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_require_names_the_extra() -> None:
    assert require("json", "x").__name__ == "json"
    with pytest.raises(ImportError, match=r"pip install 'guardwire\[onnx\]'") as err:
        require("guardwire_no_such_module", "onnx")
    assert isinstance(err.value.__cause__, ImportError)


def test_device_and_dtype_resolution() -> None:
    torch = pytest.importorskip("torch")
    from guardwire_backends.devices import resolve_device, resolve_device_and_dtype, resolve_dtype

    dev, dt = resolve_device_and_dtype("auto", "auto")
    if torch.cuda.is_available():
        assert (dev, dt) == ("cuda", torch.bfloat16)
    else:
        assert (dev, dt) == ("cpu", torch.float32)
        with pytest.raises(BackendStartError, match="CUDA"):
            resolve_device("cuda")
    assert resolve_dtype("bf16", "cpu") is torch.bfloat16
    assert resolve_dtype("float16", "cpu") is torch.float16
    assert resolve_dtype("auto", "cuda:0") is torch.bfloat16
    with pytest.raises(ValueError):
        resolve_dtype("int3", "cpu")
    with pytest.raises(ValueError):
        resolve_device("tpu")
