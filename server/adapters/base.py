"""The adapter interface between the domain (conversations, policies) and a backend (token ids).

An adapter knows one guard-model family's exact prompt format. It renders a conversation as three
spans -- ``prefix`` (instruction + policy categories: identical for every request of a policy and
role, so a backend can cache its KV state), ``body`` (the turns) and ``suffix`` (the assessment
instruction, the assistant header and the answer tokens we force, e.g. Llama Guard 3's ``\\n\\n``)
-- tokenizes them so that user text never becomes special tokens, and turns the backend's logits
back into a ``Verdict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from backends.base import ScoreItem, ScoreResult
from server.domain import Conversation, Policy, Role, Timings, Verdict

__all__ = ["EncodedPrompt", "GuardAdapter", "PromptText"]


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
    ) -> Verdict: ...
