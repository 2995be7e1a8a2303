"""The adapter interface between the domain (conversations, policies) and a backend (token ids).

An adapter knows one guard-model family's exact prompt format. It renders a conversation as three
spans -- ``prefix`` (instruction + policy categories: identical for every request of a policy and
role, so a backend can cache its KV state), ``body`` (the turns) and ``suffix`` (the assessment
instruction, the assistant header and the answer tokens we force, e.g. Llama Guard 3's ``\\n\\n``)
-- tokenizes them so that user text never becomes special tokens, and turns the backend's logits
back into a ``Verdict``.

Two extensions beyond one prompt per request:

* **Several passes.** Families that assess one policy category per forward pass (Granite
  Guardian) return all passes in one ``EncodedPrompt`` (``item`` + ``extra_items``). The caller
  scores every item (they batch like independent requests), joins the results in order with
  ``merge_results`` and calls ``interpret`` once. Single-pass adapters (Llama Guard) never see
  the difference: their merged result is the one result.
* **Answer conventions.** Where the facts leave the answer's first token open (Llama Guard 2:
  ``safe`` or `` safe``; Llama Guard 4: a forced ``\\n\\n`` or not), an adapter offers
  ``candidate_conventions``; the server's load probe builds ``with_convention(name)`` for each,
  keeps the one whose verdict tokens carry the most probability mass, and refuses to serve when
  none passes (``guardwire_server.loading.probe_model``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from guardwire_backends.base import ScoreItem, ScoreResult
from guardwire_server.domain import Conversation, Policy, Role, Timings, Verdict

__all__ = [
    "EncodedPrompt",
    "GuardAdapter",
    "PromptText",
    "UnsupportedPolicy",
    "merge_results",
    "policy_id",
]


class UnsupportedPolicy(ValueError):
    """A valid policy this model family cannot render (e.g. a Granite Guardian category that
    is not a built-in risk and has no definition); the server answers INVALID_ARGUMENT."""


@dataclass(frozen=True, slots=True)
class PromptText:
    """The rendered prompt as text; ``prefix + body + suffix`` is byte-identical to the official
    chat template's rendering (the forced answer tokens are not part of the text)."""

    prefix: str
    body: str
    suffix: str

    @property
    def full(self) -> str:
        return self.prefix + self.body + self.suffix


@dataclass(frozen=True, slots=True)
class EncodedPrompt:
    """What the backend scores, plus what the adapter needs to read the answer back."""

    item: ScoreItem
    role: Role
    policy: Policy
    # codes aligned with the category readout's token ids; several codes share a token when
    # their tokenizations collide after the common probe prefix (their probability is shared).
    category_codes: tuple[tuple[str, ...], ...]
    # further forward passes of the same request (one per category for Granite Guardian)
    extra_items: tuple[ScoreItem, ...] = ()

    @property
    def items(self) -> tuple[ScoreItem, ...]:
        """Every pass to score, in the order ``interpret`` expects their readouts."""
        return (self.item, *self.extra_items)


def policy_id(policy: Policy) -> str:
    """The id echoed in responses: the hash of the categories the model saw (stable across
    restarts and reloads while the categories stay the same), prefixed with the configured
    policy id for a named policy (``strict@p-1a2b...``)."""
    return f"{policy.name}@{policy.policy_hash}" if policy.name else policy.policy_hash


def merge_results(results: Sequence[ScoreResult]) -> ScoreResult:
    """Join the results of a request's passes: readouts concatenated in pass order, token
    counts summed. One result is returned as is."""
    if not results:
        raise ValueError("no results to merge")
    if len(results) == 1:
        return results[0]
    return ScoreResult(
        readouts=tuple(r for res in results for r in res.readouts),
        computed_tokens=sum(r.computed_tokens for r in results),
        cached_tokens=sum(r.cached_tokens for r in results),
    )


class GuardAdapter(Protocol):
    @property
    def family(self) -> str: ...

    @property
    def default_policy(self) -> Policy: ...

    @property
    def template_hash(self) -> str: ...

    @property
    def verdict_token_ids(self) -> tuple[int, int]:
        """(safe, unsafe) token ids read at the verdict position."""
        ...

    @property
    def convention(self) -> str:
        """The answer convention in use (how the verdict's first token is read)."""
        ...

    @property
    def candidate_conventions(self) -> tuple[str, ...]:
        """Conventions this tokenizer supports, preferred first; the load probe picks one."""
        ...

    def with_convention(self, name: str) -> GuardAdapter:
        """The same adapter reading the answer by convention ``name``."""
        ...

    def render(self, conversation: Conversation, policy: Policy) -> PromptText:
        """Render the prompt that assesses the last turn of ``conversation``."""
        ...

    def encode(self, conversation: Conversation, policy: Policy) -> EncodedPrompt: ...

    def interpret(
        self,
        prompt: EncodedPrompt,
        result: ScoreResult,
        threshold: float,
        timings: Timings,
    ) -> Verdict:
        """``result``: the scores of ``prompt.items`` joined by ``merge_results``."""
        ...
