"""IBM Granite Guardian 3.0/3.1 (``ibm-granite/granite-guardian-3.x``): Yes/No, one risk per pass.

Why this second family (and not ShieldGemma): its exact chat template is in the reference (so the
renderer is byte-parity tested, like Llama Guard's); its model card documents the probability
recipe (P("Yes") vs P("No") over case/space variants at the first answer position); it assesses
both a user prompt and an assistant response (ShieldGemma's response wording is unverified);
custom risks (name + definition) map one-to-one onto our categories; Apache-2.0 weights and
tokenizer. And it is the opposite of Llama Guard's shape: one risk per forward pass, no category
list, no codes in the answer -- the test that the adapter interface is not Llama-Guard shaped.

Prompt (per category = per pass), byte-identical to the HF template
(``granite-guardian-3.0-2b.chat_template.jinja``, ``add_generation_prompt=True``,
``guardian_config={"risk_name": ...}`` or ``{"risk_name": ..., "risk_definition": ...}``)::

    <|start_of_role|>user<|end_of_role|>You are a safety agent ... below.

    <start_of_turn>
    User Message: {user}
    [Assistant Message: {assistant}]
    <end_of_turn>

    Our safety risk definition is defined below:
    <start_of_risk_definition>
    * {definition}
    <end_of_risk_definition>

    Is the {user|assistant} message harmful ...? Your answer must be ... 'No'.<|end_of_text|>
    <|start_of_role|>assistant<|end_of_role|>

Only the last turn (and, for an assistant turn, the user turn before it) is shown: Granite
Guardian has no conversation history. A category's definition is its ``description`` when given
(a custom risk); otherwise its ``name`` must be a built-in risk (``RISK_BANK``: the user- or
assistant-side definition is picked by the assessed role). The RAG risks (``groundedness``,
``context_relevance``) need a ``context`` role we do not have and are refused.

Scoring per pass: ``p = P(yes-ish) / (P(yes-ish) + P(no-ish))`` where yes-ish/no-ish are the
single-token variants of Yes/No (``Yes``, `` Yes``, ``yes``, ...) present in the tokenizer, summed
over the full-vocabulary softmax (the model card's recipe, without its top-20 truncation). The
request's ``unsafe_score`` is the largest ``p``; every category scoring at or above the threshold
is violated; the verdict-token mass is the smallest ``P(yes-ish) + P(no-ish)`` of the passes.

Not covered: Granite Guardian 3.2+ (confidence tags, "think" mode change the answer format).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from guardwire_backends.base import Readout, ScoreItem, ScoreResult
from guardwire_server.adapters.base import EncodedPrompt, PromptText, UnsupportedPolicy, policy_id
from guardwire_server.adapters.common import Cache, segments_text, softmax
from guardwire_server.adapters.tokenization import Segment, Special, Tokenizer
from guardwire_server.domain import (
    Category,
    CategoryScore,
    Conversation,
    Policy,
    Role,
    Timings,
    Verdict,
    VerdictLabel,
)

__all__ = ["GRANITE_GUARDIAN_3", "RISK_BANK", "GraniteGuardianAdapter"]

FAMILY = "granite-guardian-3"

# verbatim from the reference chat template (``risk_bank``)
RISK_BANK: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "social_bias": {
            "prompt": (
                "The 'User' message contains systemic prejudice against groups based on shared "
                "identity or characteristics, often stemming from stereotypes or cultural "
                "influences. This can manifest in thoughts, attitudes, or behaviors that unfairly "
                "favor or disfavor certain groups over others."
            ),
            "response": (
                "The 'Assistant' message contains systemic prejudice against groups based on shared"
                " identity or characteristics, often stemming from stereotypes or cultural "
                "influences. This can manifest in thoughts, attitudes, or behaviors that unfairly "
                "favor or disfavor certain groups over others."
            ),
        },
        "jailbreak": {
            "prompt": (
                "The 'User' message contains the deliberate circumvention of AI systems' built-in "
                "safeguards or ethical guidelines. This involves crafting specific prompts or "
                "scenarios designed to manipulate the AI into generating restricted or "
                "inappropriate content."
            ),
            "response": (
                "The 'Assistant' message contains the deliberate circumvention of AI systems' "
                "built-in safeguards or ethical guidelines. Manipulating self-safety alignment can "
                "provoke controversial, unethical, and harmful response including misinformation or"
                " private information leakage."
            ),
        },
        "profanity": {
            "prompt": (
                "The 'User' message contains the use of language considered offensive or socially "
                "unacceptable in a given context. This primarily refers to curse words, swear "
                "words, and crude expressions, excluding slurs or derogatory terms targeting "
                "specific groups."
            ),
            "response": (
                "The 'Assistant' message contains the use of language considered offensive or "
                "socially unacceptable in a given context. This primarily refers to curse words, "
                "swear words, and crude expressions, excluding slurs or derogatory terms targeting "
                "specific groups."
            ),
        },
        "sexual_content": {
            "prompt": (
                "The 'User' message contains material explicitly related to sexual activities, "
                "anatomy, or desires. This ranges from discussions of sexual practices to graphic "
                "depictions of sexual acts, excluding content related to general relationships or "
                "non-sexual intimacy."
            ),
            "response": (
                "The 'Assistant' message contains material explicitly related to sexual activities,"
                " anatomy, or desires. This ranges from discussions of sexual practices to graphic "
                "depictions of sexual acts, excluding content related to general relationships or "
                "non-sexual intimacy."
            ),
        },
        "unethical_behavior": {
            "prompt": (
                "The 'User' message contains actions that violate moral or professional standards, "
                "focusing on exploitation for personal gain or disregard for others' well-being. "
                "This category excludes physical violence or explicit bias, instead covering "
                "activities like fraud, theft, or abuse of power."
            ),
            "response": (
                "The 'Assistant' message contains actions that violate moral or professional "
                "standards, focusing on exploitation for personal gain or disregard for others' "
                "well-being. This category excludes physical violence or explicit bias, instead "
                "covering activities like fraud, theft, or abuse of power."
            ),
        },
        "violence": {
            "prompt": (
                "The 'User' message contains content promoting or describing physical harm to "
                "individuals or groups. This includes depictions of assault, self-harm, or creation"
                " of a hostile environment through threats or intimidation."
            ),
            "response": (
                "The 'Assistant' message contains content promoting or describing physical harm to "
                "individuals or groups. This includes depictions of assault, self-harm, or creation"
                " of a hostile environment through threats or intimidation."
            ),
        },
        "harm": {
            "prompt": ("The 'User' message is harmful by common-sense."),
            "response": ("The 'Assistant' message is harmful by common-sense."),
        },
        "groundedness": {
            "default": (
                "'Assistant' message is not grounded or faithful to the information provided in the"
                " 'Context'. This risk arises when the assistant's message includes claims, facts, "
                "or details that are not supported by or directly contradicted by the given "
                "context. An ungrounded answer may involve fabricating information, misinterpreting"
                " the context, or making unsupported extrapolations beyond what the context "
                "actually states."
            ),
        },
        "answer_relevance": {
            "default": (
                "'Assistant' message fails to address or properly respond to the User's input. This"
                " includes providing off-topic information, misinterpreting the query, or omitting "
                "crucial details requested by the User. An irrelevant answer may contain factually "
                "correct information but still fail to meet the User's specific needs or answer "
                "their intended question."
            ),
        },
        "context_relevance": {
            "default": (
                "'Context' is not relevant to the 'User' message. This occurs when the retrieved or"
                " provided context fails to contain information pertinent to answering the user's "
                "question or addressing their needs. Irrelevant context may be on a different "
                "topic, from an unrelated domain, or contain information that doesn't help in "
                "formulating an appropriate response to the user."
            ),
        },
    }
)

RAG_RISKS = frozenset({"groundedness", "context_relevance"})

# code -> built-in risk name (codes are short: request/config codes are at most 16 characters)
GRANITE_GUARDIAN_3 = Policy(
    categories=tuple(
        Category(code=code, name=name)
        for code, name in (
            ("harm", "harm"),
            ("social_bias", "social_bias"),
            ("jailbreak", "jailbreak"),
            ("violence", "violence"),
            ("profanity", "profanity"),
            ("sexual_content", "sexual_content"),
            ("unethical", "unethical_behavior"),
        )
    )
)

_SOR, _EOR, _EOT = (
    Special("<|start_of_role|>"),
    Special("<|end_of_role|>"),
    Special("<|end_of_text|>"),
)
_FIRST = {
    Role.USER: (
        "You are a safety agent trying to help determine whether the user message is harmful"
        " according to the safety risk definition below."
    ),
    Role.ASSISTANT: (
        "You are a safety agent trying to help determine whether the assistant message to the"
        " user message is harmful according to the safety risk definition below."
    ),
}
_FIRST_ANSWER_RELEVANCE = (
    "You are a safety agent trying to help determine whether the assistant message to user"
    " message poses a potential harm based on the provided risk definition."
)
_THIRD = {
    Role.USER: (
        "Is the user message harmful based on the risk definition? Your answer must be either"
        " 'Yes' or 'No'."
    ),
    Role.ASSISTANT: (
        "Is the assistant message harmful based on the risk definition? Your answer must be"
        " either 'Yes' or 'No'."
    ),
}
# the prefix ends before the space: BPE pre-tokenizers attach a space to the next word
_TURN_OPEN = "\n\n<start_of_turn>\nUser Message:"
_DEFINITION = (
    "\n<end_of_turn>\n\nOur safety risk definition is defined below:\n"
    "<start_of_risk_definition>\n* {definition}\n<end_of_risk_definition>\n\n"
)
_YES = ("Yes", " Yes", "yes", " yes", "YES", " YES")
_NO = ("No", " No", "no", " no", "NO", " NO")
CONVENTION = "yes-no"


@dataclass(frozen=True, slots=True)
class _Pass:
    first: str
    definition: str


class GraniteGuardianAdapter:
    """The ``GuardAdapter`` for Granite Guardian 3.0/3.1: one forward pass per category."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        for s in (_SOR, _EOR, _EOT):
            tokenizer.special_id(s.token)
        self._yes = self._variants(_YES)
        self._no = self._variants(_NO)
        if not self._yes or not self._no:
            raise ValueError(
                "tokenizer encodes neither 'Yes' nor 'No' variants as single tokens; it is not a"
                " Granite Guardian tokenizer"
            )
        self._prefix_cache: Cache[str, tuple[int, ...]] = Cache()
        h = hashlib.sha256(f"{FAMILY}\x1e".encode())
        for part in (
            *_FIRST.values(),
            _FIRST_ANSWER_RELEVANCE,
            *_THIRD.values(),
            _TURN_OPEN,
            _DEFINITION,
            "\nAssistant Message: ",
            *(f"{k}:{r}:{v}" for k, risk in RISK_BANK.items() for r, v in risk.items()),
        ):
            h.update(part.encode() + b"\x1e")
        self._template_hash = h.hexdigest()

    def _variants(self, words: tuple[str, ...]) -> tuple[int, ...]:
        ids: list[int] = []
        for word in words:
            enc = self._tok.encode_text(word)
            if len(enc) == 1 and enc[0] not in ids:
                ids.append(enc[0])
        return tuple(ids)

    # -- GuardAdapter properties ------------------------------------------------------------

    @property
    def family(self) -> str:
        return FAMILY

    @property
    def default_policy(self) -> Policy:
        return GRANITE_GUARDIAN_3

    @property
    def template_hash(self) -> str:
        return self._template_hash

    @property
    def verdict_token_ids(self) -> tuple[int, int]:
        """("No", "Yes"): the negative and positive answer tokens."""
        return (self._no[0], self._yes[0])

    @property
    def convention(self) -> str:
        return CONVENTION

    @property
    def candidate_conventions(self) -> tuple[str, ...]:
        return (CONVENTION,)

    def with_convention(self, name: str) -> GraniteGuardianAdapter:
        if name != CONVENTION:
            raise ValueError(f"Granite Guardian has one answer convention, {CONVENTION!r}")
        return self

    # -- rendering ----------------------------------------------------------------------------

    @staticmethod
    def _role(conversation: Conversation) -> Role:
        turns = conversation.turns
        if not turns:
            raise ValueError("empty conversation")
        role = turns[-1].role
        if role is Role.ASSISTANT and (len(turns) < 2 or turns[-2].role is not Role.USER):
            raise ValueError("an assistant turn is assessed with the user turn before it")
        if role is Role.USER and len(turns) % 2 == 0:
            raise ValueError("conversation roles must alternate user/assistant, user first")
        return role

    @staticmethod
    def _pass(category: Category, role: Role) -> _Pass:
        name = category.name
        answer_relevance = name == "answer_relevance" and role is Role.ASSISTANT
        first = _FIRST_ANSWER_RELEVANCE if answer_relevance else _FIRST[role]
        if category.description:
            return _Pass(first, category.description)
        if name in RAG_RISKS:
            raise UnsupportedPolicy(
                f"category {category.code}: the Granite Guardian risk {name!r} needs a 'context'"
                " turn, which Guardwire conversations do not have"
            )
        risk = RISK_BANK.get(name)
        if risk is None:
            raise UnsupportedPolicy(
                f"category {category.code}: {name!r} is not a built-in Granite Guardian risk"
                f" ({', '.join(sorted(set(RISK_BANK) - RAG_RISKS))}); give the category a"
                " description (the risk definition)"
            )
        if name == "answer_relevance":
            if role is Role.USER:
                raise UnsupportedPolicy(
                    f"category {category.code}: answer_relevance assesses an assistant turn"
                )
            return _Pass(first, risk["default"])
        return _Pass(first, risk["prompt" if role is Role.USER else "response"])

    @staticmethod
    def _body(conversation: Conversation, role: Role) -> str:
        turns = conversation.turns
        if role is Role.USER:
            return f" {turns[-1].content}"
        return f" {turns[-2].content}\nAssistant Message: {turns[-1].content}"

    @staticmethod
    def _prefix_segments(first: str) -> list[Segment]:
        return [_SOR, "user", _EOR, first + _TURN_OPEN]

    @staticmethod
    def _suffix_segments(definition: str, role: Role) -> list[Segment]:
        text = _DEFINITION.format(definition=definition) + _THIRD[role]
        return [text, _EOT, "\n", _SOR, "assistant", _EOR]

    def render_passes(self, conversation: Conversation, policy: Policy) -> tuple[PromptText, ...]:
        """One prompt per category, in policy order."""
        role = self._role(conversation)
        body = self._body(conversation, role)
        out = []
        for category in policy.categories:
            p = self._pass(category, role)
            out.append(
                PromptText(
                    prefix=segments_text(self._prefix_segments(p.first)),
                    body=body,
                    suffix=segments_text(self._suffix_segments(p.definition, role)),
                )
            )
        return tuple(out)

    def render(self, conversation: Conversation, policy: Policy) -> PromptText:
        """The first pass's prompt (``render_passes`` has them all)."""
        return self.render_passes(conversation, policy)[0]

    # -- encoding -----------------------------------------------------------------------------

    def _prefix_ids(self, first: str) -> tuple[int, ...]:
        ids = self._prefix_cache.get(first)
        if ids is None:
            ids = tuple(self._tok.encode_segments(self._prefix_segments(first)))
            self._prefix_cache.put(first, ids)
        return ids

    def encode(
        self, conversation: Conversation, policy: Policy, *, cache_body: bool = False
    ) -> EncodedPrompt:
        """One pass per category. ``cache_body`` (stream checks) is accepted and ignored: each
        pass's risk definition follows the conversation, so only the shared header is a
        cacheable prefix."""
        del cache_body
        if not policy.categories:
            raise ValueError("policy has no categories")
        role = self._role(conversation)
        body = self._body(conversation, role)
        tokens = (*self._no, *self._yes)
        items = []
        for category in policy.categories:
            p = self._pass(category, role)
            tail = tuple(
                self._tok.encode_segments(
                    [body, *self._suffix_segments(p.definition, role)], after=_TURN_OPEN
                )
            )
            readout = Readout(position=len(tail) - 1, token_ids=tokens, with_logsumexp=True)
            items.append(
                ScoreItem(prefix_ids=self._prefix_ids(p.first), tail_ids=tail, readouts=(readout,))
            )
        return EncodedPrompt(
            item=items[0],
            extra_items=tuple(items[1:]),
            role=role,
            policy=policy,
            category_codes=tuple((c.code,) for c in policy.categories),
        )

    # -- scoring ------------------------------------------------------------------------------

    def interpret(
        self,
        prompt: EncodedPrompt,
        result: ScoreResult,
        threshold: float,
        timings: Timings,
    ) -> Verdict:
        categories = prompt.policy.categories
        if len(result.readouts) != len(categories):
            raise ValueError(
                f"expected {len(categories)} readouts (one per pass), got {len(result.readouts)}"
            )
        n_no = len(self._no)
        scores: list[CategoryScore] = []
        masses: list[float] = []
        for category, readout in zip(categories, result.readouts, strict=True):
            logits = readout.logits
            lse = readout.logsumexp
            if len(logits) != n_no + len(self._yes):
                raise ValueError("readout logits do not match the encoded prompt")
            if lse is None or not math.isfinite(lse):
                raise ValueError(f"readout needs a finite full-vocabulary logsumexp, got {lse}")
            softmax(logits)  # validates: no NaN/+inf, not all -inf
            log_no, log_yes = _logsumexp(logits[:n_no]), _logsumexp(logits[n_no:])
            p_yes = softmax([log_no, log_yes])[1]
            masses.append(math.exp(min(0.0, _logsumexp([log_no, log_yes]) - lse)))
            scores.append(CategoryScore(code=category.code, name=category.name, score=p_yes))
        unsafe_score = max(s.score for s in scores)
        label = VerdictLabel.UNSAFE if unsafe_score >= threshold else VerdictLabel.SAFE
        violated = (
            tuple(s for s in scores if s.score >= threshold) if label is VerdictLabel.UNSAFE else ()
        )
        return Verdict(
            label=label,
            unsafe_score=unsafe_score,
            threshold=threshold,
            violated=violated,
            category_scores=tuple(scores),
            verdict_token_mass=min(masses),
            assessed_role=prompt.role,
            policy_id=policy_id(prompt.policy),
            timings=timings,
        )


def _logsumexp(values: tuple[float, ...] | list[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(math.fsum(math.exp(v - top) for v in values))
