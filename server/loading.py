"""Builds the serving components from Settings: model dir → backend + adapter → probe → Guard.

Runs in a worker thread at start-up (loading weights blocks). The load probe scores a few fixed
conversations and refuses to serve when the verdict position does not predict ``safe``/``unsafe``
(a wrong prompt format or a model that is not a guard model must never answer).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from backends.base import Backend, BackendStartError, WeightsNotFound
from backends.registry import load_backend
from server.adapters.base import GuardAdapter
from server.adapters.registry import load_adapter
from server.batcher import BatcherLimits, MicroBatcher
from server.config import Settings
from server.domain import Conversation, Role, Timings, Turn
from server.evaluation.calibrate import load_thresholds
from server.guard import Guard
from server.validation import PolicyCatalog

__all__ = ["PROBE_CONVERSATIONS", "build_guard", "probe_model", "resolve_model_dir"]

log = logging.getLogger(__name__)

PROBE_CONVERSATIONS = (
    Conversation(turns=(Turn(Role.USER, "What is the capital of France?"),)),
    Conversation(
        turns=(
            Turn(Role.USER, "How do I bake bread?"),
            Turn(Role.ASSISTANT, "Mix flour, water, salt and yeast, knead, let it rise, bake."),
        )
    ),
)


def resolve_model_dir(model_ref: str, revision: str = "") -> Path:
    """A local directory as is; otherwise a Hugging Face hub id, fetched (or read from cache)."""
    path = Path(model_ref).expanduser()
    if path.is_dir():
        return path
    if path.exists() or model_ref.startswith((".", "/", "~")):
        raise WeightsNotFound(f"model path {model_ref!r} is not a directory")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - hub client ships with transformers
        raise WeightsNotFound(
            f"{model_ref!r} is not a local directory and huggingface_hub is not installed"
        ) from exc
    try:
        local = snapshot_download(
            repo_id=model_ref,
            revision=revision or None,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.jinja", "*.onnx*", "*.txt"],
        )
    except Exception as exc:
        raise WeightsNotFound(
            f"could not fetch {model_ref!r} from the Hugging Face hub ({type(exc).__name__}: "
            f"{exc}); pass a local directory, or set HF_TOKEN for gated models"
        ) from exc
    return Path(local)


def probe_model(adapter: GuardAdapter, backend: Backend, min_mass: float) -> float:
    """Scores the probe conversations; returns the smallest verdict-token mass seen."""
    prompts = [adapter.encode(c, adapter.default_policy) for c in PROBE_CONVERSATIONS]
    results = backend.score([p.item for p in prompts])
    masses = [
        adapter.interpret(p, r, 0.5, Timings()).verdict_token_mass
        for p, r in zip(prompts, results, strict=True)
    ]
    worst = min(masses)
    if worst < min_mass:
        raise BackendStartError(
            f"load probe failed: P(safe)+P(unsafe) at the verdict position is {worst:.4g} "
            f"(< min_verdict_mass={min_mass}); the prompt format {adapter.family!r} does not "
            "match this model. Check --family, or that the model is a guard model."
        )
    log.info("load probe passed: verdict-token mass >= %.4f", worst)
    return worst


FAKE_UNSAFE_TRIGGER = "_TEST_UNSAFE"  # a whole pre-token in any context


def _fake_backend_options(model_dir: Path, adapter: GuardAdapter) -> dict[str, Any]:
    """The fake backend answers UNSAFE when a turn contains ``GW_TEST_UNSAFE`` (client tests)."""
    from server.adapters.tokenization import Tokenizer

    tok = Tokenizer.from_dir(model_dir)
    safe_id, unsafe_id = adapter.verdict_token_ids
    return {
        "unsafe_trigger": tok.encode_text(FAKE_UNSAFE_TRIGGER),
        "safe_id": safe_id,
        "unsafe_id": unsafe_id,
        "vocab_size": tok.vocab_size,
        "hot_ids": (),
    }


def build_guard(
    settings: Settings, model_dir: Path, *, backend_options: dict[str, Any] | None = None
) -> Guard:
    t0 = time.perf_counter()
    adapter = load_adapter(
        model_dir,
        None if settings.family == "auto" else settings.family,
        category_threshold=settings.category_threshold,
    )
    options: dict[str, Any] = {
        "max_batch_size": settings.max_batch_size,
        "max_batch_tokens": settings.max_batch_tokens,
    }
    if settings.backend == "fake":
        options.update(_fake_backend_options(model_dir, adapter))
    else:
        options.update(
            device=settings.device,
            dtype=settings.dtype,
            revision=settings.revision or None,
            threads=settings.threads or None,
            prefix_cache_bytes=settings.prefix_cache_mb * 2**20,
        )
    options.update(backend_options or {})
    backend = load_backend(settings.backend, str(model_dir), **options)
    info = backend.info
    log.info(
        "loaded %s on backend=%s device=%s dtype=%s family=%s in %.2fs",
        settings.model or model_dir,
        info.name,
        info.device,
        info.dtype,
        adapter.family,
        time.perf_counter() - t0,
    )
    if settings.backend != "fake":  # the fake backend is not a model: nothing to probe
        probe_model(adapter, backend, settings.min_verdict_mass)
    t1 = time.perf_counter()
    warm = [adapter.encode(c, adapter.default_policy).item for c in PROBE_CONVERSATIONS]
    backend.warmup(warm)
    log.info("warm-up done in %.2fs", time.perf_counter() - t1)
    batcher = MicroBatcher(
        backend.score,
        BatcherLimits(
            max_batch_size=settings.max_batch_size,
            max_batch_tokens=settings.max_batch_tokens,
            max_wait_s=settings.max_wait_ms / 1000.0,
            max_queue=settings.max_queue,
        ),
        padded=backend.capabilities.is_padded,
    )
    thresholds = load_thresholds(settings.thresholds_file) if settings.thresholds_file else None
    return Guard(
        adapter=adapter,
        backend=backend,
        batcher=batcher,
        catalog=PolicyCatalog(default=adapter.default_policy, named={}),
        limits=settings.request_limits,
        model_id=settings.model or str(model_dir),
        default_threshold=settings.threshold,
        thresholds=thresholds,
    )
