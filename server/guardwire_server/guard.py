"""The transport-neutral core: a valid request in, a ``Verdict`` out.

``Guard`` ties the adapter (prompt format), the micro-batcher and the backend together. The
servicer calls it after validation; nothing here knows gRPC.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from guardwire_backends.base import Backend, ScoreResult
from guardwire_server.adapters.base import (
    EncodedPrompt,
    GuardAdapter,
    UnsupportedPolicy,
    merge_results,
)
from guardwire_server.batcher import BatchOutcome, MicroBatcher
from guardwire_server.config import RequestLimits
from guardwire_server.domain import Conversation, Policy, Role, Timings, Verdict
from guardwire_server.errors import Draining, InvalidRequest, LimitExceeded, ModelNotReady
from guardwire_server.telemetry import ATTR, NO_TELEMETRY, Telemetry
from guardwire_server.thresholds import ThresholdPolicy
from guardwire_server.truncation import drop_oldest_turns
from guardwire_server.validation import PolicyCatalog, ValidClassifyRequest
from guardwire_server.verdict_cache import Scored, VerdictCache

__all__ = ["Guard", "ModelDescription"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelDescription:
    model_id: str
    revision: str
    family: str
    backend: str
    device: str
    dtype: str
    template_hash: str
    verdict_token_ids: tuple[int, int]


class Guard:
    """Classifies valid requests. Created once the model is loaded; ``ready`` gates traffic."""

    def __init__(
        self,
        *,
        adapter: GuardAdapter,
        backend: Backend,
        batcher: MicroBatcher,
        catalog: PolicyCatalog,
        limits: RequestLimits,
        model_id: str,
        default_threshold: float = 0.5,
        thresholds: ThresholdPolicy | None = None,
        telemetry: Telemetry = NO_TELEMETRY,
        verdict_cache: VerdictCache | None = None,
        prioritize_prompts: bool = True,
        count_tokens: Callable[[str], int] | None = None,
        truncate: str = "reject",
    ) -> None:
        self.adapter = adapter
        self.backend = backend
        self.batcher = batcher
        self.catalog = catalog
        self.limits = limits
        self.default_threshold = default_threshold
        self.thresholds = thresholds  # calibrated per-category thresholds (`guardwire calibrate`)
        self.telemetry = telemetry  # spans of the render, queue, inference and parse stages
        self.verdict_cache = verdict_cache  # None = off; hits skip render and inference
        self.prioritize_prompts = prioritize_prompts  # user-turn checks batch before responses
        self.truncate = truncate  # over max_prompt_tokens: reject | drop_oldest_turns
        # model tokens of a text (stream cadence); a rough 4-characters-a-token estimate if unset
        self.count_tokens = count_tokens or (lambda text: max(1, len(text) // 4))
        info = backend.info
        self.description = ModelDescription(
            model_id=model_id,
            revision=info.revision,
            family=adapter.family,
            backend=info.name,
            device=info.device,
            dtype=info.dtype,
            template_hash=adapter.template_hash,
            verdict_token_ids=adapter.verdict_token_ids,
        )
        d = self.description
        self._cache_namespace = "\x1f".join(
            (d.model_id, d.revision, d.family, d.backend, d.device, d.dtype, d.template_hash)
        )
        self.draining = False
        # stream checks put the conversation in the cacheable prefix (``cache_body``) only when
        # the backend reuses the KV of the longest cached prefix: with exact-match caching every
        # growing conversation would be a miss, the policy prefix included
        self.cache_stream_bodies = _extends_prefixes(backend) and _accepts_cache_body(adapter)

    async def classify(
        self,
        request: ValidClassifyRequest,
        *,
        deadline: float | None,
        priority: int | None = None,
    ) -> Verdict:
        """``priority=None``: 1 for a user-turn check (a prompt waiting to reach the LLM) and 0
        for a response check when ``prioritize_prompts`` is on, else 0."""
        if self.draining:
            raise Draining("the server is draining for shutdown; retry on another replica")
        if priority is None:
            user_turn = request.conversation.last_role is Role.USER
            priority = 1 if self.prioritize_prompts and user_turn else 0
        return await self.score(
            request.conversation,
            request.policy,
            threshold=request.threshold,
            deadline=deadline,
            priority=priority,
        )

    async def score(
        self,
        conversation: Conversation,
        policy: Policy,
        *,
        threshold: float | None,
        deadline: float | None,
        priority: int = 0,
        stream: bool = False,
    ) -> Verdict:
        """Scores one conversation. ``threshold=None`` applies the server's default, or the
        calibrated per-category thresholds when a thresholds file is configured. With a verdict
        cache, an identical recent request is answered without inference (batch_size 0).
        ``stream``: a check of a stream's growing conversation; its KV is cached so the next
        check computes only the new text (see ``cache_stream_bodies``). Same scores."""
        telemetry = self.telemetry
        dropped = 0
        if self.truncate == "drop_oldest_turns":
            limit = self.limits.max_prompt_tokens
            conversation, dropped = drop_oldest_turns(
                conversation, lambda c: self._prompt_tokens(c, policy), limit
            )
        if self.verdict_cache is None:
            scored = await self._compute(
                conversation, policy, deadline=deadline, priority=priority, stream=stream
            )
        else:
            key = self.verdict_cache.key(self._cache_namespace, conversation, policy)
            scored, _ = await self.verdict_cache.get_or_compute(
                key,
                lambda: self._compute(
                    conversation, policy, deadline=deadline, priority=priority, stream=stream
                ),
                deadline=deadline,
            )
        with telemetry.span("parse") as span:
            verdict = self._interpret(scored.prompt, scored.result, threshold, scored.timings)
            telemetry.describe_verdict(span, verdict)
        return dataclasses.replace(verdict, truncated_turns=dropped) if dropped else verdict

    def _prompt_tokens(self, conversation: Conversation, policy: Policy) -> int:
        """Tokens of the longest forward pass of ``conversation``'s prompt (0 when the policy
        cannot be rendered: ``_compute`` reports that)."""
        try:
            prompt = self.adapter.encode(conversation, policy)
        except (UnsupportedPolicy, ValueError):
            return 0
        return max(item.num_tokens for item in prompt.items)

    async def _compute(
        self,
        conversation: Conversation,
        policy: Policy,
        *,
        deadline: float | None,
        priority: int,
        stream: bool = False,
    ) -> Scored:
        """Render, submit and score: the threshold-independent part of ``score``."""
        telemetry = self.telemetry
        self.batcher.check_admission()  # overload is refused before any rendering work
        with telemetry.span("render", conversation=conversation) as span:
            try:
                if stream and self.cache_stream_bodies:
                    encode: Any = self.adapter.encode  # cache_body: not in the GuardAdapter API
                    prompt = encode(conversation, policy, cache_body=True)
                else:
                    prompt = self.adapter.encode(conversation, policy)
            except UnsupportedPolicy as exc:
                raise InvalidRequest.one("policy", str(exc)) from None
            n_tokens = max(item.num_tokens for item in prompt.items)  # per forward pass
            span.set_attribute(ATTR["prompt_tokens"], n_tokens)
            if n_tokens > self.limits.max_prompt_tokens:
                raise LimitExceeded(
                    "conversation", "max_prompt_tokens", self.limits.max_prompt_tokens, n_tokens
                )
        with telemetry.batched() as stages:  # the queue and inference spans
            outcome = await self._submit(prompt, deadline=deadline, priority=priority)
            stages.done(outcome)
        timings = Timings(
            queue_s=outcome.queue_s,
            inference_s=outcome.inference_s,
            batch_size=outcome.batch_size,
            computed_tokens=outcome.result.computed_tokens,
            cached_tokens=outcome.result.cached_tokens,
        )
        return Scored(prompt=prompt, result=outcome.result, timings=timings)

    async def _submit(
        self, prompt: EncodedPrompt, *, deadline: float | None, priority: int
    ) -> BatchOutcome:
        """Scores every pass of ``prompt`` (one for Llama Guard; one per category for Granite
        Guardian: they are batched like separate requests) and joins them into one outcome."""
        if not prompt.extra_items:
            return await self.batcher.submit(prompt.item, deadline=deadline, priority=priority)
        outcomes = await asyncio.gather(
            *(self.batcher.submit(i, deadline=deadline, priority=priority) for i in prompt.items)
        )
        return BatchOutcome(
            result=merge_results([o.result for o in outcomes]),
            queue_s=max(o.queue_s for o in outcomes),
            inference_s=max(o.inference_s for o in outcomes),
            batch_size=max(o.batch_size for o in outcomes),
            batch_span_context=outcomes[0].batch_span_context,
        )

    def _interpret(
        self,
        prompt: EncodedPrompt,
        result: ScoreResult,
        threshold: float | None,
        timings: Timings,
    ) -> Verdict:
        if threshold is not None:
            return self.adapter.interpret(prompt, result, threshold, timings)
        verdict = self.adapter.interpret(prompt, result, self.default_threshold, timings)
        if self.thresholds is None:
            return verdict
        scores = {c.code: c.score for c in verdict.category_scores}
        _, calibrated = self.thresholds.threshold_for(scores)
        if calibrated == verdict.threshold:
            return verdict
        return self.adapter.interpret(prompt, result, calibrated, timings)


def _extends_prefixes(backend: Backend) -> bool:
    """Whether ``backend`` caches prefixes and serves a new one from its longest cached prefix
    (``guardwire_backends.torch_hf.PrefixCache``: the torch and onnxruntime backends)."""
    caching = bool(getattr(getattr(backend, "capabilities", None), "prefix_cache", False))
    cache = getattr(backend, "prefix_cache", None)
    return caching and callable(getattr(cache, "longest_prefix", None))


def _accepts_cache_body(adapter: GuardAdapter) -> bool:
    try:
        return "cache_body" in inspect.signature(adapter.encode).parameters
    except (TypeError, ValueError):
        return False


class NotReadyGuard:
    """Stand-in while the model loads: every call is UNAVAILABLE / MODEL_NOT_READY."""

    draining = False

    async def classify(self, request: ValidClassifyRequest, **_: object) -> Verdict:
        raise ModelNotReady("the model is still loading; retry with backoff")


def monotonic_deadline(time_remaining: float | None) -> float | None:
    """Converts gRPC's remaining time into an absolute ``time.monotonic()`` deadline."""
    return None if time_remaining is None else time.monotonic() + time_remaining
