"""Builds the serving components from Settings: model dir → backend + adapter → probe → Guard.

Runs in a worker thread at start-up (loading weights blocks). The load probe scores a few fixed
conversations and refuses to serve when the verdict position does not predict ``safe``/``unsafe``
(a wrong prompt format or a model that is not a guard model must never answer). Where the adapter
offers several answer conventions (how the verdict's first token is read, e.g. Llama Guard 2's
``safe`` vs `` safe``), the probe scores each and keeps the one with the most verdict-token mass.
Named policies from the config file are resolved against the adapter's default taxonomy and
checked by rendering them (``guardwire_server.policies``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guardwire_backends.base import Backend, BackendStartError, WeightsNotFound
from guardwire_backends.registry import load_backend
from guardwire_server.adapters.base import GuardAdapter, merge_results
from guardwire_server.adapters.registry import load_adapter
from guardwire_server.batcher import BatcherLimits, MicroBatcher
from guardwire_server.config import Settings
from guardwire_server.domain import Conversation, Policy, Role, Timings, Turn
from guardwire_server.guard import Guard
from guardwire_server.policies import build_catalog, describe
from guardwire_server.thresholds import load_thresholds
from guardwire_server.verdict_cache import VerdictCache

__all__ = [
    "PROBE_CONVERSATIONS",
    "ProbeReport",
    "build_guard",
    "policy_check",
    "probe_model",
    "resolve_model_dir",
]

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


@dataclass(frozen=True, slots=True)
class ProbeReport:
    """The load probe's decision: the adapter to serve with, and per candidate convention the
    smallest verdict-token mass over the probe conversations."""

    adapter: GuardAdapter
    convention: str
    masses: dict[str, float]

    @property
    def mass(self) -> float:
        return self.masses[self.convention]


def _worst_mass(adapter: GuardAdapter, backend: Backend) -> float:
    prompts = [adapter.encode(c, adapter.default_policy) for c in PROBE_CONVERSATIONS]
    results = backend.score([item for p in prompts for item in p.items])
    masses, start = [], 0
    for p in prompts:
        merged = merge_results(results[start : start + len(p.items)])
        start += len(p.items)
        masses.append(adapter.interpret(p, merged, 0.5, Timings()).verdict_token_mass)
    return min(masses)


def probe_model(adapter: GuardAdapter, backend: Backend, min_mass: float) -> ProbeReport:
    """Scores the probe conversations under every candidate answer convention; keeps the one
    with the highest worst-case verdict-token mass (ties: the adapter's preferred order) and
    refuses to serve when even that one is below ``min_mass``."""
    masses: dict[str, float] = {}
    for name in adapter.candidate_conventions:
        masses[name] = _worst_mass(adapter.with_convention(name), backend)
    best = max(masses, key=lambda n: masses[n])  # first of the maxima: the preferred one
    shown = ", ".join(f"{n}={m:.4g}" for n, m in masses.items())
    if masses[best] < min_mass:
        raise BackendStartError(
            f"load probe failed: P(safe)+P(unsafe) at the verdict position is {masses[best]:.4g} "
            f"(< min_verdict_mass={min_mass}; per answer convention: {shown}); the prompt format "
            f"{adapter.family!r} does not match this model. Check --family, or that the model "
            "is a guard model."
        )
    chosen = adapter.with_convention(best)
    if len(masses) > 1:
        log.info(
            "load probe: answer convention %r chosen for %s (verdict-token mass per candidate: "
            "%s); verdict token ids %s",
            best,
            adapter.family,
            shown,
            list(chosen.verdict_token_ids),
        )
    log.info("load probe passed: verdict-token mass >= %.4f", masses[best])
    return ProbeReport(adapter=chosen, convention=best, masses=masses)


def policy_check(adapter: GuardAdapter) -> Callable[[Policy], None]:
    """A named-policy check: the adapter must render the policy for a user or an assistant
    turn (ValueError otherwise)."""

    def check(policy: Policy) -> None:
        problems = []
        for conversation in PROBE_CONVERSATIONS:
            try:
                adapter.encode(conversation, policy)
                return
            except ValueError as exc:
                problems.append(str(exc))
        raise ValueError("; ".join(dict.fromkeys(problems)))

    return check


FAKE_UNSAFE_TRIGGER = "_TEST_UNSAFE"  # a whole pre-token in any context


def _fake_backend_options(model_dir: Path, adapter: GuardAdapter) -> dict[str, Any]:
    """The fake backend answers UNSAFE when a turn contains ``GW_TEST_UNSAFE`` (client tests)."""
    from guardwire_server.adapters.tokenization import Tokenizer

    tok = Tokenizer.from_dir(model_dir)
    safe_id, unsafe_id = adapter.verdict_token_ids
    return {
        "unsafe_trigger": tok.encode_text(FAKE_UNSAFE_TRIGGER),
        "safe_id": safe_id,
        "unsafe_id": unsafe_id,
        "vocab_size": tok.vocab_size,
        "hot_ids": (),
    }


def _token_counter(model_dir: Path) -> Callable[[str], int]:
    from guardwire_server.adapters.tokenization import Tokenizer

    tok = Tokenizer.from_dir(model_dir)
    return lambda text: len(tok.encode_text(text))


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
        adapter = probe_model(adapter, backend, settings.min_verdict_mass).adapter
    catalog = build_catalog(settings.policies, adapter.default_policy, check=policy_check(adapter))
    if catalog.named:
        log.info("named policies: %s", describe(catalog))
    t1 = time.perf_counter()
    warm = [
        item
        for c in PROBE_CONVERSATIONS
        for item in adapter.encode(c, adapter.default_policy).items
    ]
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
        catalog=catalog,
        limits=settings.request_limits,
        model_id=settings.model or str(model_dir),
        default_threshold=settings.threshold,
        count_tokens=_token_counter(model_dir),
        thresholds=thresholds,
        verdict_cache=(
            VerdictCache(settings.verdict_cache_entries, settings.verdict_cache_ttl_s)
            if settings.verdict_cache_entries
            else None
        ),
        prioritize_prompts=settings.prioritize_prompts,
        truncate=settings.truncate,
    )
