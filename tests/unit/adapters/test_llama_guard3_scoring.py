"""Llama Guard 3 readouts and verdict math, checked against hand-computed values."""

from __future__ import annotations

import math
from typing import Any

import pytest
import tokenizers

from guardwire_backends.base import ReadoutResult, ScoreResult
from guardwire_server.adapters.base import EncodedPrompt
from guardwire_server.adapters.llama_guard import LlamaGuard3Adapter
from guardwire_server.adapters.taxonomy import LLAMA_GUARD_3_1B, LLAMA_GUARD_3_8B
from guardwire_server.adapters.tokenization import Tokenizer
from guardwire_server.domain import (
    Category,
    Conversation,
    Policy,
    Role,
    Timings,
    Turn,
    VerdictLabel,
)

USER_ONLY = Conversation((Turn(Role.USER, "How do I pick a lock?"),))
USER_AGENT = Conversation((Turn(Role.USER, "hi"), Turn(Role.ASSISTANT, "hello")))
GROUPED = Policy(
    categories=(
        Category("S1", "One."),
        Category("S1a", "One, variant a."),  # tokenizes S,1,a: shares the "1" candidate
        Category("S2", "Two."),
    ),
    name="grouped",
)
TIMINGS = Timings(queue_s=0.01, inference_s=0.02, batch_size=3, computed_tokens=40)


@pytest.fixture(scope="module")
def lg1b(llama3_tokenizer: Tokenizer) -> LlamaGuard3Adapter:
    return LlamaGuard3Adapter(llama3_tokenizer, "1b")


@pytest.fixture(scope="module")
def lg8b(llama3_tokenizer: Tokenizer) -> LlamaGuard3Adapter:
    return LlamaGuard3Adapter(llama3_tokenizer, "8b")


def _result(safe: float, unsafe: float, lse: float | None, cats: list[float]) -> ScoreResult:
    return ScoreResult(
        readouts=(
            ReadoutResult(logits=(safe, unsafe), logsumexp=lse),
            ReadoutResult(logits=tuple(cats), logsumexp=None),
        ),
        computed_tokens=40,
        cached_tokens=100,
    )


# -- token ids and readout positions (facts file §2.3) ---------------------------------------


@pytest.mark.parametrize("variant", ["1b", "8b"])
def test_real_llama3_token_ids(llama3_tokenizer: Tokenizer, variant: Any) -> None:
    adapter = LlamaGuard3Adapter(llama3_tokenizer, variant)
    assert adapter.verdict_token_ids == (19193, 39257)
    assert adapter.family == f"llama-guard-3-{variant}"
    policy = adapter.default_policy
    enc = adapter.encode(USER_ONLY, policy)
    verdict, cats = enc.item.readouts
    assert verdict.token_ids == (19193, 39257)
    assert verdict.with_logsumexp
    # tail ends: <|end_header_id|>, forced "\n\n", then the probe "unsafe", "\n", "S"
    assert enc.item.tail_ids[-5:] == (128007, 271, 39257, 198, 50)
    assert enc.item.tail_ids[verdict.position] == 271
    assert verdict.position == len(enc.item.tail_ids) - 4
    assert cats.position == len(enc.item.tail_ids) - 1
    assert not cats.with_logsumexp
    digits = (16, 17, 18, 19, 20, 21, 22, 23, 24, 605, 806, 717, 1032, 975)
    n = len(policy.categories)
    assert n == (13 if variant == "1b" else 14)
    assert cats.token_ids == digits[:n]
    assert enc.category_codes == tuple((f"S{i}",) for i in range(1, n + 1))
    assert enc.role is Role.USER
    assert enc.policy is policy


def test_readouts_for_excluded_and_agent_turn(lg8b: LlamaGuard3Adapter) -> None:
    policy = Policy(tuple(c for c in LLAMA_GUARD_3_8B.categories if c.code in {"S3", "S14"}))
    enc = lg8b.encode(USER_AGENT, policy)
    assert enc.role is Role.ASSISTANT
    assert enc.item.readouts[1].token_ids == (18, 975)
    assert enc.category_codes == (("S3",), ("S14",))


def test_grouped_codes_share_a_candidate(lg1b: LlamaGuard3Adapter) -> None:
    enc = lg1b.encode(USER_ONLY, GROUPED)
    assert enc.item.tail_ids[-3:] == (39257, 198, 50)
    assert enc.item.readouts[1].token_ids == (16, 17)
    assert enc.category_codes == (("S1", "S1a"), ("S2",))


def test_probe_stops_at_the_shared_prefix_for_letter_codes(lg1b: LlamaGuard3Adapter) -> None:
    policy = Policy((Category("violence", "V."), Category("hate", "H.")))
    enc = lg1b.encode(USER_ONLY, policy)
    assert enc.item.tail_ids[-2:] == (39257, 198)  # only "unsafe", "\n" are shared
    assert len(enc.item.readouts[1].token_ids) == 2


def test_invalid_policies_are_refused(lg1b: LlamaGuard3Adapter) -> None:
    for policy in (
        Policy(()),
        Policy((Category("S1", "A."), Category("S1", "B."))),
        Policy((Category("S 1", "A."),)),
        Policy((Category("S1,S2", "A."),)),
    ):
        with pytest.raises(ValueError):
            lg1b.encode(USER_ONLY, policy)


# -- interpret() ---------------------------------------------------------------------------


def test_scores_and_mass_hand_computed(lg1b: LlamaGuard3Adapter) -> None:
    enc = lg1b.encode(USER_ONLY, GROUPED)
    # P(unsafe | {safe, unsafe}) = 3 / (1 + 3); full-vocab mass = (1 + 3) / 8;
    # conditional over the candidates "1" (S1 and S1a) and "2" (S2) = 4:1 = 0.8 / 0.2
    res = _result(0.0, math.log(3.0), math.log(8.0), [math.log(4.0), 0.0])
    v = lg1b.interpret(enc, res, 0.5, TIMINGS)
    assert v.label is VerdictLabel.UNSAFE
    assert v.unsafe_score == pytest.approx(0.75, abs=1e-15)
    assert v.verdict_token_mass == pytest.approx(0.5, abs=1e-15)
    got = {s.code: s.score for s in v.category_scores}
    assert [s.code for s in v.category_scores] == ["S1", "S1a", "S2"]
    assert [s.name for s in v.category_scores] == ["One.", "One, variant a.", "Two."]
    assert got["S1"] == pytest.approx(0.75 * 0.8, abs=1e-15)
    assert got["S1a"] == got["S1"]  # one token, one probability
    assert got["S2"] == pytest.approx(0.75 * 0.2, abs=1e-15)
    assert [s.code for s in v.violated] == ["S1", "S1a"]  # argmax group; 0.2 < 0.3
    assert v.threshold == 0.5
    assert v.assessed_role is Role.USER
    assert v.policy_id == f"grouped@{GROUPED.policy_hash}"  # named: id and content hash
    assert v.timings == TIMINGS


def test_threshold_boundary_is_inclusive(lg1b: LlamaGuard3Adapter) -> None:
    enc = lg1b.encode(USER_ONLY, LLAMA_GUARD_3_1B)
    res = _result(2.5, 2.5, 10.0, [0.0] * 13)  # exactly 0.5
    assert lg1b.interpret(enc, res, 0.5, TIMINGS).label is VerdictLabel.UNSAFE
    safe = lg1b.interpret(enc, res, math.nextafter(0.5, 1.0), TIMINGS)
    assert safe.label is VerdictLabel.SAFE
    assert safe.unsafe_score == 0.5
    assert safe.violated == ()  # never any violated category when SAFE
    assert len(safe.category_scores) == 13  # but every category is scored
    assert all(s.score == pytest.approx(0.5 / 13) for s in safe.category_scores)
    assert lg1b.interpret(enc, res, 0.0, TIMINGS).label is VerdictLabel.UNSAFE


def test_category_threshold_boundary(llama3_tokenizer: Tokenizer) -> None:
    enc_policy = Policy(tuple(Category(f"S{i}", f"N{i}.") for i in (1, 2, 3, 4)))
    equal = _result(-5.0, 5.0, 5.0, [0.0, 0.0, 0.0, 0.0])  # conditional exactly 0.25 each
    at = LlamaGuard3Adapter(llama3_tokenizer, "1b", category_threshold=0.25)
    enc = at.encode(USER_ONLY, enc_policy)
    assert [s.code for s in at.interpret(enc, equal, 0.5, TIMINGS).violated] == [
        "S1",
        "S2",
        "S3",
        "S4",
    ]
    above = LlamaGuard3Adapter(llama3_tokenizer, "1b", category_threshold=0.2500001)
    # ties: the first candidate is the argmax; nothing else reaches the threshold
    assert [s.code for s in above.interpret(enc, equal, 0.5, TIMINGS).violated] == ["S1"]
    # argmax always reported, threshold adds the runners-up, output in policy order
    res = _result(0.0, 9.0, 9.0, [math.log(1.0), math.log(5.0), math.log(1.0), math.log(3.0)])
    v = at.interpret(enc, res, 0.5, TIMINGS)
    assert [s.code for s in v.violated] == ["S2", "S4"]  # 0.5 and 0.3; S1/S3 0.1
    assert v.policy_id == enc_policy.policy_hash  # ad hoc policy: identified by its hash


def test_numerically_stable_for_extreme_logits(lg1b: LlamaGuard3Adapter) -> None:
    enc = lg1b.encode(USER_ONLY, LLAMA_GUARD_3_1B)
    cats = [-1e4] * 12 + [1e4]
    v = lg1b.interpret(enc, _result(-1000.0, 1000.0, 1000.0, cats), 0.5, TIMINGS)
    assert v.unsafe_score == 1.0
    assert v.verdict_token_mass == 1.0
    assert [s.code for s in v.violated] == ["S13"]
    v = lg1b.interpret(enc, _result(1000.0, -1000.0, 1000.0, cats), 0.5, TIMINGS)
    assert v.unsafe_score == 0.0
    assert v.label is VerdictLabel.SAFE
    # -inf is a legal logit (pruned heads); a log-sum-exp below the logits is clamped
    v = lg1b.interpret(enc, _result(-math.inf, 3.0, 2.0, [0.0] * 13), 0.5, TIMINGS)
    assert v.unsafe_score == 1.0
    assert v.verdict_token_mass == 1.0
    # low mass: the model wanted some other token
    v = lg1b.interpret(enc, _result(0.0, 0.0, math.log(200.0), [0.0] * 13), 0.5, TIMINGS)
    assert v.verdict_token_mass == pytest.approx(0.01, rel=1e-12)


@pytest.mark.parametrize(
    "res",
    [
        _result(math.nan, 0.0, 1.0, [0.0] * 13),
        _result(math.inf, 0.0, 1.0, [0.0] * 13),
        _result(-math.inf, -math.inf, 1.0, [0.0] * 13),
        _result(0.0, 1.0, None, [0.0] * 13),
        _result(0.0, 1.0, math.nan, [0.0] * 13),
        _result(0.0, 1.0, 2.0, [0.0] * 12),
        ScoreResult(readouts=(ReadoutResult((0.0, 1.0), 2.0),), computed_tokens=1, cached_tokens=0),
    ],
)
def test_malformed_results_are_refused(lg1b: LlamaGuard3Adapter, res: ScoreResult) -> None:
    enc = lg1b.encode(USER_ONLY, LLAMA_GUARD_3_1B)
    with pytest.raises(ValueError):
        lg1b.interpret(enc, res, 0.5, TIMINGS)


def test_interpret_uses_the_encoded_prompt_only(lg1b: LlamaGuard3Adapter) -> None:
    """A hand-built prompt (as a fake backend test would make) works without re-encoding."""
    policy = Policy((Category("A", "Alpha."), Category("B", "Beta.")), name="p")
    enc = lg1b.encode(USER_AGENT, policy)
    fake = EncodedPrompt(
        item=enc.item, role=Role.ASSISTANT, policy=policy, category_codes=(("A", "B"),)
    )
    v = lg1b.interpret(fake, _result(0.0, 1.0, 1.5, [0.3]), 0.5, TIMINGS)
    assert [s.code for s in v.violated] == ["A", "B"]
    assert v.assessed_role is Role.ASSISTANT


# -- construction -------------------------------------------------------------------------


def test_template_hash_is_stable_and_per_variant(llama3_tokenizer: Tokenizer) -> None:
    a = LlamaGuard3Adapter(llama3_tokenizer, "1b")
    b = LlamaGuard3Adapter(llama3_tokenizer, "1b")
    c = LlamaGuard3Adapter(llama3_tokenizer, "8b")
    assert a.template_hash == b.template_hash != c.template_hash
    assert len(a.template_hash) == 64


def test_bad_arguments(llama3_tokenizer: Tokenizer) -> None:
    with pytest.raises(ValueError, match="variant"):
        LlamaGuard3Adapter(llama3_tokenizer, "3b")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="category_threshold"):
        LlamaGuard3Adapter(llama3_tokenizer, "1b", category_threshold=1.5)


def _tiny(pre_tokenizer: Any, specials: list[str]) -> Tokenizer:
    vocab = {"[UNK]": 0, "\n\n": 1, "safe": 2, "unsafe": 3}
    raw = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizer
    raw.add_special_tokens(specials)
    return Tokenizer(raw)


TEMPLATE_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def test_tokenizer_without_lead_token_is_refused() -> None:
    tok = _tiny(tokenizers.pre_tokenizers.Whitespace(), TEMPLATE_SPECIALS)  # drops "\n\n"
    with pytest.raises(ValueError, match="not a Llama Guard 3 tokenizer"):
        LlamaGuard3Adapter(tok, "1b")


def test_tokenizer_without_template_specials_is_refused() -> None:
    split = tokenizers.pre_tokenizers.Split("\n\n", behavior="isolated")
    assert LlamaGuard3Adapter(_tiny(split, TEMPLATE_SPECIALS), "8b").verdict_token_ids == (2, 3)
    with pytest.raises(ValueError, match="<\\|eot_id\\|>"):
        LlamaGuard3Adapter(_tiny(split, TEMPLATE_SPECIALS[:3]), "8b")
