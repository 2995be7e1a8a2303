"""Llama Guard 3 (1B and 8B): exact prompt format, injection-safe encoding, verdict scoring.

The rendering reproduces the official HF chat templates byte for byte (golden-tested against the
Jinja files in ``shared/reference``), including their quirks: the 8B template starts with a space
before ``<|begin_of_text|>``, the 1B template has a space before ``<|eot_id|>``, and neither ends
with the ``\\n\\n`` the model always generates first -- so we force that token and read the
safe/unsafe logits at the next position (a first-token score would measure ``P("\\n\\n")``).

Categories are scored by teacher-forcing ``unsafe\\n`` plus the tokens every code's answer shares
(``S`` for S-codes) and reading the next token, the one that tells the codes apart. Usage::

    adapter = LlamaGuard3Adapter(Tokenizer.from_dir(model_dir), "1b")
    prompt = adapter.encode(conversation, adapter.default_policy)
    verdict = adapter.interpret(prompt, backend.score([prompt.item])[0], 0.5, timings)
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from backends.base import Readout, ScoreItem, ScoreResult
from server.adapters.base import EncodedPrompt, PromptText
from server.adapters.taxonomy import DEFAULT_POLICIES, check_policy
from server.adapters.tokenization import Segment, Special, Tokenizer
from server.domain import (
    CategoryScore,
    Conversation,
    Policy,
    Role,
    Timings,
    Verdict,
    VerdictLabel,
)

__all__ = ["LlamaGuard3Adapter", "Variant"]

Variant = Literal["1b", "8b"]

_BOT, _SH, _EH, _EOT = (
    Special("<|begin_of_text|>"),
    Special("<|start_header_id|>"),
    Special("<|end_header_id|>"),
    Special("<|eot_id|>"),
)
_TASK = (
    "\n\nTask: Check if there is unsafe content in '{role}' messages in conversations according"
    " our safety policy with the below categories.\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\n"
)
_CATEGORIES_END = "<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n"
_INSTRUCTIONS = (
    "<END CONVERSATION>\n\nProvide your safety assessment for ONLY THE LAST {role} message in the"
    " above conversation:\n - First line must read 'safe' or 'unsafe'.\n - If unsafe, a second"
    " line must include a comma-separated list of violated categories."
)
# variant -> (text before <|begin_of_text|>, text before <|eot_id|>)
_QUIRKS: dict[str, tuple[str, str]] = {"1b": ("", " "), "8b": (" ", "")}
_LEAD = "\n\n"  # what LG3 generates right after the assistant header
_TURN_LABEL = {Role.USER: "User", Role.ASSISTANT: "Agent"}
_CACHE_MAX = 1024
# the non-constant parts' formats, hashed with the constants into template_hash
_LINE_FORMATS = "{code}: {name}[\n{description}]\n|{User,Agent}: {content.strip()}\n\n"

K = TypeVar("K")
V = TypeVar("V")


class _Cache(Generic[K, V]):
    """A small thread-safe memo (per policy/role work is repeated on every request)."""

    def __init__(self) -> None:
        self._data: dict[K, V] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            if len(self._data) >= _CACHE_MAX:
                self._data.clear()
            self._data[key] = value


@dataclass(frozen=True, slots=True)
class _Probe:
    """Tokens forced after the verdict lead, and the next-token candidates per code group."""

    ids: tuple[int, ...]  # [unsafe] + tokens shared by every code's answer
    candidates: tuple[int, ...]
    groups: tuple[tuple[str, ...], ...]  # aligned with candidates


def _segments_text(segments: Sequence[Segment]) -> str:
    return "".join(s.token if isinstance(s, Special) else s for s in segments)


def _softmax(logits: Sequence[float]) -> list[float]:
    """Numerically stable softmax; rejects NaN/+inf and all -inf (a broken backend)."""
    if not logits or any(math.isnan(x) or x == math.inf for x in logits):
        raise ValueError(f"invalid logits {tuple(logits)!r}")
    top = max(logits)
    if top == -math.inf:
        raise ValueError("all logits are -inf")
    exps = [math.exp(x - top) for x in logits]
    total = math.fsum(exps)
    return [e / total for e in exps]


def _common_prefix(seqs: Sequence[Sequence[int]]) -> list[int]:
    out: list[int] = []
    for column in zip(*seqs, strict=False):
        if any(t != column[0] for t in column):
            break
        out.append(column[0])
    return out


class LlamaGuard3Adapter:
    """The ``GuardAdapter`` for Llama Guard 3 1B and 8B (same format, two template quirks)."""

    def __init__(
        self, tokenizer: Tokenizer, variant: Variant, category_threshold: float = 0.3
    ) -> None:
        if variant not in _QUIRKS:
            raise ValueError(f"unknown Llama Guard 3 variant {variant!r}; known: 1b, 8b")
        if not 0.0 <= category_threshold <= 1.0:
            raise ValueError(f"category_threshold must be in [0, 1], got {category_threshold}")
        self._tok = tokenizer
        self._variant: Variant = variant
        self._pre_bot, self._pre_eot = _QUIRKS[variant]
        self._category_threshold = category_threshold
        self._lead = tuple(tokenizer.encode_text(_LEAD))
        self._safe = self._answer_token("safe")
        self._unsafe = self._answer_token("unsafe")
        for s in (_BOT, _SH, _EH, _EOT):
            tokenizer.special_id(s.token)  # fail at construction, not on the first request
        self._prefix_cache: _Cache[tuple[Policy, Role], tuple[int, ...]] = _Cache()
        self._probe_cache: _Cache[Policy, _Probe] = _Cache()
        h = hashlib.sha256(f"llama-guard-3/{variant}\x1e".encode())
        constants = (self._pre_bot, _TASK, _CATEGORIES_END, _INSTRUCTIONS, self._pre_eot, _LEAD)
        for part in (*constants, _LINE_FORMATS):
            h.update(part.encode() + b"\x1e")
        self._template_hash = h.hexdigest()

    def _answer_token(self, word: str) -> int:
        ids = self._tok.encode_text(_LEAD + word)
        if not self._lead or len(ids) != len(self._lead) + 1 or tuple(ids[:-1]) != self._lead:
            raise ValueError(
                f"tokenizer does not encode {_LEAD + word!r} as the lead {list(self._lead)} plus"
                f" one token (got {ids}); it is not a Llama Guard 3 tokenizer"
            )
        return ids[-1]

    # -- GuardAdapter properties ------------------------------------------------------------

    @property
    def family(self) -> str:
        return f"llama-guard-3-{self._variant}"

    @property
    def default_policy(self) -> Policy:
        return DEFAULT_POLICIES[self.family]

    @property
    def template_hash(self) -> str:
        return self._template_hash

    @property
    def verdict_token_ids(self) -> tuple[int, int]:
        return (self._safe, self._unsafe)

    @property
    def category_threshold(self) -> float:
        return self._category_threshold

    # -- rendering ----------------------------------------------------------------------------

    def _prefix_segments(self, policy: Policy, role_word: str) -> list[Segment]:
        lines = "".join(
            f"{c.code}: {c.name}" + (f"\n{c.description}" if c.description else "") + "\n"
            for c in policy.categories
        )
        text = _TASK.format(role=role_word) + lines + _CATEGORIES_END
        return [self._pre_bot, _BOT, _SH, "user", _EH, text]

    def _suffix_segments(self, role_word: str) -> list[Segment]:
        return [_INSTRUCTIONS.format(role=role_word) + self._pre_eot, _EOT, _SH, "assistant", _EH]

    @staticmethod
    def _body(conversation: Conversation) -> str:
        return "".join(
            f"{_TURN_LABEL[t.role]}: {t.content.strip()}\n\n" for t in conversation.turns
        )

    @staticmethod
    def _role(conversation: Conversation) -> Role:
        turns = conversation.turns
        if not turns:
            raise ValueError("empty conversation")
        for i, turn in enumerate(turns):
            if turn.role is not (Role.USER if i % 2 == 0 else Role.ASSISTANT):
                raise ValueError("conversation roles must alternate user/assistant, user first")
        return turns[-1].role

    def render(self, conversation: Conversation, policy: Policy) -> PromptText:
        role = self._role(conversation)
        word = _TURN_LABEL[role]
        return PromptText(
            prefix=_segments_text(self._prefix_segments(policy, word)),
            body=self._body(conversation),
            suffix=_segments_text(self._suffix_segments(word)),
        )

    # -- encoding -----------------------------------------------------------------------------

    def _prefix_ids(self, policy: Policy, role: Role) -> tuple[int, ...]:
        ids = self._prefix_cache.get((policy, role))
        if ids is None:
            segments = self._prefix_segments(policy, _TURN_LABEL[role])
            ids = tuple(self._tok.encode_segments(segments))
            self._prefix_cache.put((policy, role), ids)
        return ids

    def _probe(self, policy: Policy) -> _Probe:
        probe = self._probe_cache.get(policy)
        if probe is None:
            check_policy(policy)
            probe = self._build_probe(policy)
            self._probe_cache.put(policy, probe)
        return probe

    def _build_probe(self, policy: Policy) -> _Probe:
        head = (*self._lead, self._unsafe)
        rests: list[list[int]] = []
        for c in policy.categories:
            ids = self._tok.encode_text(f"{_LEAD}unsafe\n{c.code}")
            if tuple(ids[: len(head)]) != head or len(ids) == len(head):
                raise ValueError(f"cannot probe category code {c.code!r}: answer tokens {ids}")
            rests.append(ids[len(head) :])
        shared = _common_prefix(rests)[: min(len(r) for r in rests) - 1]
        order: dict[int, list[str]] = {}
        for c, rest in zip(policy.categories, rests, strict=True):
            order.setdefault(rest[len(shared)], []).append(c.code)
        return _Probe(
            ids=(self._unsafe, *shared),
            candidates=tuple(order),
            groups=tuple(tuple(codes) for codes in order.values()),
        )

    def encode(self, conversation: Conversation, policy: Policy) -> EncodedPrompt:
        role = self._role(conversation)
        probe = self._probe(policy)
        text_ids = self._tok.encode_segments(
            [self._body(conversation), *self._suffix_segments(_TURN_LABEL[role])]
        )
        tail = (*text_ids, *self._lead, *probe.ids)
        verdict_pos = len(text_ids) + len(self._lead) - 1
        readouts = (
            Readout(
                position=verdict_pos, token_ids=(self._safe, self._unsafe), with_logsumexp=True
            ),
            Readout(position=len(tail) - 1, token_ids=probe.candidates),
        )
        item = ScoreItem(
            prefix_ids=self._prefix_ids(policy, role), tail_ids=tail, readouts=readouts
        )
        return EncodedPrompt(item=item, role=role, policy=policy, category_codes=probe.groups)

    # -- scoring ------------------------------------------------------------------------------

    def interpret(
        self,
        prompt: EncodedPrompt,
        result: ScoreResult,
        threshold: float,
        timings: Timings,
    ) -> Verdict:
        if len(result.readouts) != 2:
            raise ValueError(f"expected 2 readouts, got {len(result.readouts)}")
        verdict, cats = result.readouts
        if len(verdict.logits) != 2 or len(cats.logits) != len(prompt.category_codes):
            raise ValueError("readout logits do not match the encoded prompt")
        lse = verdict.logsumexp
        if lse is None or not math.isfinite(lse):
            raise ValueError(f"verdict readout needs a finite full-vocabulary logsumexp, got {lse}")
        unsafe_score = _softmax(verdict.logits)[1]
        # P(safe) + P(unsafe) over the full vocabulary: low mass = the model wants another token.
        mass = math.fsum(math.exp(min(0.0, x - lse)) for x in verdict.logits)
        label = VerdictLabel.UNSAFE if unsafe_score >= threshold else VerdictLabel.SAFE

        conditional = _softmax(cats.logits)
        cond_by_code = {
            code: p
            for group, p in zip(prompt.category_codes, conditional, strict=True)
            for code in group
        }
        scores = tuple(
            CategoryScore(code=c.code, name=c.name, score=unsafe_score * cond_by_code[c.code])
            for c in prompt.policy.categories
        )
        violated: tuple[CategoryScore, ...] = ()
        if label is VerdictLabel.UNSAFE:
            best = set(prompt.category_codes[conditional.index(max(conditional))])
            violated = tuple(
                s
                for s in scores
                if s.code in best or cond_by_code[s.code] >= self._category_threshold
            )
        return Verdict(
            label=label,
            unsafe_score=unsafe_score,
            threshold=threshold,
            violated=violated,
            category_scores=scores,
            verdict_token_mass=min(1.0, mass),
            assessed_role=prompt.role,
            policy_id=prompt.policy.name or prompt.policy.policy_hash,
            timings=timings,
        )
