"""The transport-neutral core: a valid request in, a ``Verdict`` out.

``Guard`` ties the adapter (prompt format), the micro-batcher and the backend together. The
servicer calls it after validation; nothing here knows gRPC.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from backends.base import Backend
from server.adapters.base import GuardAdapter
from server.batcher import MicroBatcher
from server.config import RequestLimits
from server.domain import Conversation, Policy, Timings, Verdict
from server.errors import Draining, LimitExceeded, ModelNotReady
from server.evaluation.calibrate import ThresholdPolicy
from server.validation import PolicyCatalog, ValidClassifyRequest

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
    ) -> None:
        self.adapter = adapter
        self.backend = backend
        self.batcher = batcher
        self.catalog = catalog
        self.limits = limits
        self.default_threshold = default_threshold
        self.thresholds = thresholds  # calibrated per-category thresholds (`guardwire calibrate`)
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
        self.draining = False

    async def classify(
        self,
        request: ValidClassifyRequest,
        *,
        deadline: float | None,
        priority: int = 0,
    ) -> Verdict:
        if self.draining:
            raise Draining("the server is draining for shutdown; retry on another replica")
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
    ) -> Verdict:
        """Scores one conversation. ``threshold=None`` applies the server's default, or the
        calibrated per-category thresholds when a thresholds file is configured."""
        prompt = self.adapter.encode(conversation, policy)
        n_tokens = prompt.item.num_tokens
        if n_tokens > self.limits.max_prompt_tokens:
            raise LimitExceeded(
                "conversation", "max_prompt_tokens", self.limits.max_prompt_tokens, n_tokens
            )
        outcome = await self.batcher.submit(prompt.item, deadline=deadline, priority=priority)
        timings = Timings(
            queue_s=outcome.queue_s,
            inference_s=outcome.inference_s,
            batch_size=outcome.batch_size,
            computed_tokens=outcome.result.computed_tokens,
            cached_tokens=outcome.result.cached_tokens,
        )
        if threshold is not None:
            return self.adapter.interpret(prompt, outcome.result, threshold, timings)
        verdict = self.adapter.interpret(prompt, outcome.result, self.default_threshold, timings)
        if self.thresholds is None:
            return verdict
        scores = {c.code: c.score for c in verdict.category_scores}
        _, calibrated = self.thresholds.threshold_for(scores)
        if calibrated == verdict.threshold:
            return verdict
        return self.adapter.interpret(prompt, outcome.result, calibrated, timings)


class NotReadyGuard:
    """Stand-in while the model loads: every call is UNAVAILABLE / MODEL_NOT_READY."""

    draining = False

    async def classify(self, request: ValidClassifyRequest, **_: object) -> Verdict:
        raise ModelNotReady("the model is still loading; retry with backoff")


def monotonic_deadline(time_remaining: float | None) -> float | None:
    """Converts gRPC's remaining time into an absolute ``time.monotonic()`` deadline."""
    return None if time_remaining is None else time.monotonic() + time_remaining
