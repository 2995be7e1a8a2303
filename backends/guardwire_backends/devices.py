"""Resolve the device and dtype once, at load time.

"auto" means: the GPU when there is one, and the dtype that is fast *and* accurate enough there
(bf16 on CUDA, fp32 on CPU). The choice is logged so an operator can see what actually ran.
torch is imported lazily so that importing this module costs nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from guardwire_backends._optional import require
from guardwire_backends.base import BackendStartError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DTYPE_NAMES",
    "dtype_name",
    "resolve_device",
    "resolve_device_and_dtype",
    "resolve_dtype",
]

log = logging.getLogger(__name__)

# accepted spellings -> canonical torch attribute name
DTYPE_NAMES: dict[str, str] = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; an explicit CUDA device must exist."""
    require("torch", "torch")
    import torch

    device = device.strip().lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise BackendStartError(f"device {device!r} requested but CUDA is not available")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise BackendStartError(
                f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s) visible"
            )
        return device
    raise ValueError(f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto`` -> bfloat16 on CUDA, float32 on CPU; otherwise one of :data:`DTYPE_NAMES`."""
    require("torch", "torch")
    import torch

    key = dtype.strip().lower()
    if key == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if key not in DTYPE_NAMES:
        raise ValueError(
            f"unknown dtype {dtype!r}; expected 'auto' or one of {sorted(DTYPE_NAMES)}"
        )
    resolved: torch.dtype = getattr(torch, DTYPE_NAMES[key])
    return resolved


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def resolve_device_and_dtype(device: str = "auto", dtype: str = "auto") -> tuple[str, torch.dtype]:
    """Resolve both and log the outcome (once per backend load)."""
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    log.info(
        "backend device=%s dtype=%s (requested device=%s dtype=%s)",
        dev,
        dtype_name(dt),
        device,
        dtype,
    )
    return dev, dt
