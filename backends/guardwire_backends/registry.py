"""Backend names -> lazy loaders.

Loaders import their backend module on first use, so ``guardwire`` starts (and ``--help`` works)
without torch or onnxruntime installed; only the backend actually chosen pays its import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from guardwire_backends.base import Backend, BackendStartError

__all__ = ["LOADERS", "available_backends", "load_backend"]


def _load_torch(model_ref: str, **options: Any) -> Backend:
    try:
        from guardwire_backends.torch_hf import TorchBackend
    except ImportError as exc:  # the message names the extra to install
        raise BackendStartError(str(exc)) from exc

    return TorchBackend.load(model_ref, **options)


def _load_fake(model_ref: str, **options: Any) -> Backend:
    from guardwire_backends.fake import FakeBackend

    return FakeBackend(model_ref, **options)


def _load_onnxruntime(model_ref: str, **options: Any) -> Backend:
    from guardwire_backends.onnxruntime_ort import (
        OnnxBackend,  # imports onnxruntime lazily, in load()
    )

    return OnnxBackend.load(model_ref, **options)


LOADERS: dict[str, Callable[..., Backend]] = {
    "torch": _load_torch,
    "fake": _load_fake,
    "onnxruntime": _load_onnxruntime,
}


def available_backends() -> tuple[str, ...]:
    return tuple(sorted(LOADERS))


def load_backend(name: str, model_ref: str, **options: Any) -> Backend:
    """Load backend ``name`` for ``model_ref``; ``options`` go to that backend's loader."""
    loader = LOADERS.get(name)
    if loader is None:
        raise ValueError(f"unknown backend {name!r}; available: {', '.join(available_backends())}")
    return loader(model_ref, **options)
