"""Llama Guard (every version): exact prompt format, injection-safe encoding, verdict scoring.

All Llama Guard versions share one skeleton -- a header, the ``Task:`` line with the assessed role,
the category list, the ``User:``/``Agent:`` turns, the assessment instructions, a footer -- and
differ in the header/footer tokens, a few words and the whitespace. ``LlamaGuardFormat`` captures
one version's text; ``LlamaGuardAdapter`` renders, encodes and scores any of them. This module
holds the machinery and Llama Guard 3 (``LlamaGuard3Adapter``); ``llama_guard_v1``, ``_v2`` and
``_v4`` hold the other versions' formats.

The rendering reproduces the official HF chat templates byte for byte (golden-tested against the
Jinja files in ``shared/reference``), including their quirks: the LG3 8B template starts with a
space before ``<|begin_of_text|>``, the 1B template has a space before ``<|eot_id|>``, and neither
ends with the ``\\n\\n`` the model always generates first -- so we force that token and read the
safe/unsafe logits at the next position (a first-token score would measure ``P("\\n\\n")``).

How the answer starts is an ``AnswerConvention``: the forced lead text (LG3: ``\\n\\n``) and the
text before the verdict word (LG1/LG2 after ``[/INST]``: a space). Where the facts leave it open
a format offers several conventions; the server's load probe picks one
(``guardwire_server.loading.probe_model``).

Categories are scored by teacher-forcing ``unsafe\\n`` plus the tokens every code's answer shares
(``S`` for S-codes) and reading the next token, the one that tells the codes apart. Usage::

    adapter = LlamaGuard3Adapter(Tokenizer.from_dir(model_dir), "1b")
    prompt = adapter.encode(conversation, adapter.default_policy)
    verdict = adapter.interpret(prompt, backend.score([prompt.item])[0], 0.5, timings)
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass
from typing import Literal

from guardwire_backends.base import Readout, ScoreItem, ScoreResult
from guardwire_server.adapters.base import EncodedPrompt, PromptText, policy_id
from guardwire_server.adapters.common import (
    Cache,
    common_prefix,
    segments_text,
    softmax,
    split_body,
)
from guardwire_server.adapters.taxonomy import LLAMA_GUARD_3_1B, LLAMA_GUARD_3_8B, check_policy
from guardwire_server.adapters.tokenization import Segment, Special, Tokenizer
from guardwire_server.domain import (
    CategoryScore,
    Conversation,
    Policy,
    Role,
    Timings,
    Verdict,
    VerdictLabel,
)

__all__ = [
    "LG3_FORMATS",
    "AnswerConvention",
    "LlamaGuard3Adapter",
    "LlamaGuardAdapter",
    "LlamaGuardFormat",
    "Variant",
]

Variant = Literal["1b", "8b"]

TURN_LABEL = {Role.USER: "User", Role.ASSISTANT: "Agent"}
# the non-constant parts' formats, hashed with the constants into template_hash
_LINE_FORMATS = "{code}: {name}[\n{description}]\n|{User,Agent}: {content.strip()}\n\n"


@dataclass(frozen=True, slots=True)
class AnswerConvention:
    """How the model's answer starts: ``lead`` is forced before the verdict word (LG3's
    ``\\n\\n``), ``word_prefix`` is part of the verdict token (`` safe`` vs ``safe``)."""

    name: str
    lead: str
    word_prefix: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class LlamaGuardFormat:
    """One Llama Guard version's prompt text. ``task`` and ``instructions`` contain ``{role}``.

    Rendered: ``head + task + category lines + categories_end`` (the prefix), the turns (the
    body), ``instructions + tail`` (the suffix). ``bos`` is prepended by id outside the text,
    for versions whose template omits it while Meta's reference code adds it.
    """

    version: str  # for messages: "Llama Guard 3"
    family: str
    head: tuple[Segment, ...]
    task: str
    categories_end: str
    instructions: str
    tail: tuple[Segment, ...]
    conventions: tuple[AnswerConvention, ...]
    default_policy: Policy
    name_suffix: str = ""  # after every category name (LG2's "S1: Violent Crimes. ")
    first_name_suffix: str = ""  # after the first category name only (LG1's "O1: ... Hate. ")
    bos: str | None = None

    def specials(self) -> tuple[str, ...]:
        found = [s.token for s in (*self.head, *self.tail) if isinstance(s, Special)]
        return (*([self.bos] if self.bos else []), *found)

    def answer_context(self) -> str:
        """The prompt text right before the answer ("" when the prompt ends with a special
        token): the last line of the suffix, which does not depend on the role."""
        text = ""
        for seg in reversed(self.tail):
            if isinstance(seg, Special):
                return text
            text = seg + text
        return (self.instructions + text).rsplit("\n", 1)[-1]


# -- Llama Guard 3 -----------------------------------------------------------------------------

_BOT, _SH, _EH, _EOT = (
    Special("<|begin_of_text|>"),
    Special("<|start_header_id|>"),
    Special("<|end_header_id|>"),
    Special("<|eot_id|>"),
)
TASK = (
    "Task: Check if there is unsafe content in '{role}' messages in conversations according"
    " our safety policy with the below categories.\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\n"
)
CATEGORIES_END = "<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n"
INSTRUCTIONS = (
    "<END CONVERSATION>\n\nProvide your safety assessment for ONLY THE LAST {role} message in the"
    " above conversation:\n - First line must read 'safe' or 'unsafe'.\n - If unsafe, a second"
    " line must include a comma-separated list of violated categories."
)
LEAD_NN = AnswerConvention(
    "lead-nn", "\n\n", "", "force '\\n\\n' after the assistant header, then read safe/unsafe"
)


def _lg3(variant: Variant, pre_bot: str, pre_eot: str, policy: Policy) -> LlamaGuardFormat:
    return LlamaGuardFormat(
        version="Llama Guard 3",
        family=f"llama-guard-3-{variant}",
        head=(pre_bot, _BOT, _SH, "user", _EH),
        task="\n\n" + TASK,
        categories_end=CATEGORIES_END,
        instructions=INSTRUCTIONS,
        tail=(pre_eot, _EOT, _SH, "assistant", _EH),
        conventions=(LEAD_NN,),
        default_policy=policy,
    )


# variant quirks: (text before <|begin_of_text|>, text before <|eot_id|>)
LG3_FORMATS: dict[str, LlamaGuardFormat] = {
    "1b": _lg3("1b", "", " ", LLAMA_GUARD_3_1B),
    "8b": _lg3("8b", " ", "", LLAMA_GUARD_3_8B),
}


# -- the adapter -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Probe:
    """Tokens forced after the verdict lead, and the next-token candidates per code group."""

    ids: tuple[int, ...]  # [unsafe] + tokens shared by every code's answer
    candidates: tuple[int, ...]
    groups: tuple[tuple[str, ...], ...]  # aligned with candidates


@dataclass(frozen=True, slots=True)
class _Answer:
    """A convention resolved against the tokenizer."""

    convention: AnswerConvention
    lead: tuple[int, ...]
    safe: int
    unsafe: int


class LlamaGuardAdapter:
    """The ``GuardAdapter`` for a Llama Guard version given by its ``LlamaGuardFormat``.

    ``convention``: the answer convention's name; None takes the format's first convention the
    tokenizer supports (the load probe may switch with ``with_convention``).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        fmt: LlamaGuardFormat,
        *,
        convention: str | None = None,
        category_threshold: float = 0.3,
    ) -> None:
        if not 0.0 <= category_threshold <= 1.0:
            raise ValueError(f"category_threshold must be in [0, 1], got {category_threshold}")
        self._tok = tokenizer
        self._fmt = fmt
        self._category_threshold = category_threshold
        for token in fmt.specials():
            tokenizer.special_id(token)  # fail at construction, not on the first request
        self._bos = (tokenizer.special_id(fmt.bos),) if fmt.bos else ()
        self._answer_ctx = fmt.answer_context()
        answers: dict[str, _Answer] = {}
        problems: list[str] = []
        for conv in fmt.conventions:
            try:
                answers[conv.name] = self._resolve(conv)
            except ValueError as exc:
                problems.append(str(exc))
        if not answers:
            raise ValueError(f"{'; '.join(problems)}; it is not a {fmt.version} tokenizer")
        self._answers = answers
        name = convention if convention is not None else next(iter(answers))
        if name not in answers:
            known = ", ".join(c.name for c in fmt.conventions)
            raise ValueError(
                f"answer convention {name!r} is not usable with this tokenizer "
                f"(usable: {', '.join(answers)}; {fmt.version} knows: {known})"
            )
        self._answer = answers[name]
        self._prefix_cache: Cache[tuple[Policy, Role], tuple[int, ...]] = Cache()
        self._probe_cache: Cache[Policy, _Probe] = Cache()
        self._suffix_len_cache: Cache[Role, int] = Cache()

    def _resolve(self, conv: AnswerConvention) -> _Answer:
        ctx = self._answer_ctx
        lead = tuple(self._tok.encode_text(conv.lead, after=ctx))
        if conv.lead and not lead:
            raise ValueError(f"tokenizer encodes the lead {conv.lead!r} as no token")
        ids = {}
        for word in ("safe", "unsafe"):
            text = conv.lead + conv.word_prefix + word
            got = self._tok.encode_text(text, after=ctx)
            if len(got) != len(lead) + 1 or tuple(got[:-1]) != lead:
                raise ValueError(
                    f"tokenizer does not encode {text!r} as the lead {list(lead)} plus one token"
                    f" (got {got})"
                )
            ids[word] = got[-1]
        return _Answer(conv, lead, ids["safe"], ids["unsafe"])

    # -- GuardAdapter properties ------------------------------------------------------------

    @property
    def family(self) -> str:
        return self._fmt.family

    @property
    def format(self) -> LlamaGuardFormat:
        return self._fmt

    @property
    def default_policy(self) -> Policy:
        return self._fmt.default_policy

    @property
    def template_hash(self) -> str:
        fmt, conv = self._fmt, self._answer.convention
        h = hashlib.sha256(f"{fmt.family}\x1e".encode())
        parts = (
            segments_text(fmt.head),
            fmt.task,
            fmt.name_suffix,
            fmt.first_name_suffix,
            fmt.categories_end,
            fmt.instructions,
            segments_text(fmt.tail),
            fmt.bos or "",
            conv.lead,
            conv.word_prefix,
            _LINE_FORMATS,
        )
        for part in parts:
            h.update(part.encode() + b"\x1e")
        return h.hexdigest()

    @property
    def verdict_token_ids(self) -> tuple[int, int]:
        return (self._answer.safe, self._answer.unsafe)

    @property
    def convention(self) -> str:
        return self._answer.convention.name

    @property
    def lead_ids(self) -> tuple[int, ...]:
        """Tokens forced between the prompt and the verdict token (LG3: ``\\n\\n``)."""
        return self._answer.lead

    @property
    def candidate_conventions(self) -> tuple[str, ...]:
        return tuple(self._answers)

    def with_convention(self, name: str) -> LlamaGuardAdapter:
        if name not in self._answers:
            raise ValueError(
                f"answer convention {name!r} is not usable (usable: {', '.join(self._answers)})"
            )
        other = copy.copy(self)
        other._answer = self._answers[name]
        other._probe_cache = Cache()  # probes contain the answer tokens
        return other

    @property
    def category_threshold(self) -> float:
        return self._category_threshold

    # -- rendering ----------------------------------------------------------------------------

    def _prefix_segments(self, policy: Policy, role_word: str) -> list[Segment]:
        fmt = self._fmt
        lines = "".join(
            f"{c.code}: {c.name}"
            + (fmt.first_name_suffix if i == 0 else "")
            + fmt.name_suffix
            + (f"\n{c.description}" if c.description else "")
            + "\n"
            for i, c in enumerate(policy.categories)
        )
        text = fmt.task.format(role=role_word) + lines + fmt.categories_end
        return [*fmt.head, text]

    def _suffix_segments(self, role_word: str) -> list[Segment]:
        return [self._fmt.instructions.format(role=role_word), *self._fmt.tail]

    @staticmethod
    def _body(conversation: Conversation) -> str:
        return "".join(f"{TURN_LABEL[t.role]}: {t.content.strip()}\n\n" for t in conversation.turns)

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
        word = TURN_LABEL[role]
        return PromptText(
            prefix=segments_text(self._prefix_segments(policy, word)),
            body=self._body(conversation),
            suffix=segments_text(self._suffix_segments(word)),
        )

    # -- encoding -----------------------------------------------------------------------------

    def _prefix_ids(self, policy: Policy, role: Role) -> tuple[int, ...]:
        ids = self._prefix_cache.get((policy, role))
        if ids is None:
            segments = self._prefix_segments(policy, TURN_LABEL[role])
            ids = (*self._bos, *self._tok.encode_segments(segments))
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
        answer = self._answer
        conv = answer.convention
        head = (*answer.lead, answer.unsafe)
        rests: list[list[int]] = []
        for c in policy.categories:
            text = f"{conv.lead}{conv.word_prefix}unsafe\n{c.code}"
            ids = self._tok.encode_text(text, after=self._answer_ctx)
            if tuple(ids[: len(head)]) != head or len(ids) == len(head):
                raise ValueError(f"cannot probe category code {c.code!r}: answer tokens {ids}")
            rests.append(ids[len(head) :])
        shared = common_prefix(rests)[: min(len(r) for r in rests) - 1]
        order: dict[int, list[str]] = {}
        for c, rest in zip(policy.categories, rests, strict=True):
            order.setdefault(rest[len(shared)], []).append(c.code)
        return _Probe(
            ids=(answer.unsafe, *shared),
            candidates=tuple(order),
            groups=tuple(tuple(codes) for codes in order.values()),
        )

    def _suffix_len(self, role: Role) -> int:
        """Tokens of the suffix after a body (which always ends with ``\\n\\n``); 0 if the
        suffix does not start on a token boundary there (only the cache split is affected)."""
        n = self._suffix_len_cache.get(role)
        if n is None:
            segments = self._suffix_segments(TURN_LABEL[role])
            try:
                n = len(self._tok.encode_segments(segments, after="\n\n"))
            except ValueError:
                n = 0
            self._suffix_len_cache.put(role, n)
        return n

    def encode(
        self, conversation: Conversation, policy: Policy, *, cache_body: bool = False
    ) -> EncodedPrompt:
        """``cache_body``: also put the conversation's tokens, but the last few
        (``BODY_CACHE_MARGIN``), in the item's prefix, for stream checks: a backend that reuses
        the KV of the longest cached prefix then computes only the text that arrived since the
        last check. The concatenated token sequence is the same either way."""
        role = self._role(conversation)
        probe = self._probe(policy)
        text_ids = self._tok.encode_segments(
            [self._body(conversation), *self._suffix_segments(TURN_LABEL[role])],
            after=self._fmt.categories_end,
        )
        prefix = self._prefix_ids(policy, role)
        if cache_body:
            prefix, text = split_body(prefix, text_ids, self._suffix_len(role))
        else:
            text = tuple(text_ids)
        lead = self._answer.lead
        tail = (*text, *lead, *probe.ids)
        verdict_pos = len(text) + len(lead) - 1
        readouts = (
            Readout(position=verdict_pos, token_ids=self.verdict_token_ids, with_logsumexp=True),
            Readout(position=len(tail) - 1, token_ids=probe.candidates),
        )
        item = ScoreItem(prefix_ids=prefix, tail_ids=tail, readouts=readouts)
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
        unsafe_score = softmax(verdict.logits)[1]
        # P(safe) + P(unsafe) over the full vocabulary: low mass = the model wants another token.
        mass = math.fsum(math.exp(min(0.0, x - lse)) for x in verdict.logits)
        label = VerdictLabel.UNSAFE if unsafe_score >= threshold else VerdictLabel.SAFE

        conditional = softmax(cats.logits)
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
            policy_id=policy_id(prompt.policy),
            timings=timings,
        )


class LlamaGuard3Adapter(LlamaGuardAdapter):
    """Llama Guard 3 1B and 8B (same format, two template quirks)."""

    def __init__(
        self, tokenizer: Tokenizer, variant: Variant, category_threshold: float = 0.3
    ) -> None:
        if variant not in LG3_FORMATS:
            raise ValueError(f"unknown Llama Guard 3 variant {variant!r}; known: 1b, 8b")
        self._variant: Variant = variant
        super().__init__(tokenizer, LG3_FORMATS[variant], category_threshold=category_threshold)
