"""Granite Guardian 3.0/3.1: byte parity with the HF template per risk (one pass each), token
parity, the multi-pass encoding and the Yes/No scoring, hand-computed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import tokenizers

from guardwire_backends.base import ReadoutResult, ScoreResult
from guardwire_server.adapters.base import UnsupportedPolicy, merge_results
from guardwire_server.adapters.granite_guardian import (
    GRANITE_GUARDIAN_3,
    RISK_BANK,
    GraniteGuardianAdapter,
)
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
from tests.unit.adapters.conftest import reference_template
from tests.unit.adapters.lg_parity import CORPUS, TURNS, jinja

U, A = Role.USER, Role.ASSISTANT
BUILT_IN = ("harm", "social_bias", "jailbreak", "violence", "profanity", "sexual_content",
            "unethical_behavior")  # fmt: skip
TIMINGS = Timings(queue_s=0.01, inference_s=0.02, batch_size=2, computed_tokens=10)


@pytest.fixture(scope="module")
def tok(granite_tokenizer_dir: Path) -> Tokenizer:
    return Tokenizer.from_dir(granite_tokenizer_dir)


@pytest.fixture(scope="module")
def raw(granite_tokenizer_dir: Path) -> tokenizers.Tokenizer:
    return tokenizers.Tokenizer.from_file(str(granite_tokenizer_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def adapter(tok: Tokenizer) -> GraniteGuardianAdapter:
    return GraniteGuardianAdapter(tok)


@pytest.fixture(scope="module")
def render() -> Any:
    return jinja(reference_template("granite-guardian-3.0-2b.chat_template.jinja"))


def _conv(turns: tuple[tuple[Role, str], ...]) -> Conversation:
    # Guardwire turns are stripped at the edge (validation); the template does not strip
    return Conversation(tuple(Turn(r, c.strip()) for r, c in turns))


def _messages(c: Conversation) -> list[dict[str, str]]:
    return [{"role": t.role.value, "content": t.content} for t in c.turns]


def _config(category: Category) -> dict[str, str]:
    if category.description:
        return {"risk_name": category.name, "risk_definition": category.description}
    return {"risk_name": category.name}


CUSTOM = Category("pii", "personal_data", "The message reveals a person's home address.")


def test_risk_bank_is_the_templates() -> None:
    assert set(BUILT_IN) <= set(RISK_BANK)
    assert [c.name for c in GRANITE_GUARDIAN_3.categories] == list(BUILT_IN)
    assert all(len(c.code) <= 16 for c in GRANITE_GUARDIAN_3.categories)


@pytest.mark.parametrize("conv_id", [cid for cid, _ in CORPUS if not cid.startswith("special")])
def test_render_matches_official_template(
    conv_id: str, adapter: GraniteGuardianAdapter, render: Any
) -> None:
    c = _conv(TURNS[conv_id])
    policy = Policy((*GRANITE_GUARDIAN_3.categories, CUSTOM))
    texts = adapter.render_passes(c, policy)
    assert len(texts) == len(policy.categories)
    for category, text in zip(policy.categories, texts, strict=True):
        expected = render(
            messages=_messages(c), guardian_config=_config(category), add_generation_prompt=True
        )
        assert text.full == expected, category.code
        assert text.prefix.startswith("<|start_of_role|>user<|end_of_role|>You are a safety")
        assert text.suffix.endswith("<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>")
    assert adapter.render(c, policy) == texts[0]


def test_answer_relevance_is_assistant_only(adapter: GraniteGuardianAdapter, render: Any) -> None:
    policy = Policy((Category("relevance", "answer_relevance"),))
    c = _conv(((U, "What is 2+2?"), (A, "Paris.")))
    cfg = {"risk_name": "answer_relevance"}
    expected = render(messages=_messages(c), guardian_config=cfg, add_generation_prompt=True)
    assert adapter.render(c, policy).full == expected
    with pytest.raises(UnsupportedPolicy, match="assistant turn"):
        adapter.encode(_conv(((U, "hi"),)), policy)


@pytest.mark.parametrize(
    ("category", "message"),
    [
        (Category("x", "made_up_risk"), "not a built-in Granite Guardian risk"),
        (Category("g", "groundedness"), "'context' turn"),
    ],
)
def test_unsupported_categories(
    adapter: GraniteGuardianAdapter, category: Category, message: str
) -> None:
    with pytest.raises(UnsupportedPolicy, match=message):
        adapter.encode(_conv(((U, "hi"),)), Policy((category,)))


@pytest.mark.parametrize("conv_id", [cid for cid, _ in CORPUS])
def test_tokens_match_whole_string_encoding(
    conv_id: str, adapter: GraniteGuardianAdapter, raw: tokenizers.Tokenizer
) -> None:
    c = _conv(TURNS[conv_id])
    policy = Policy((GRANITE_GUARDIAN_3.categories[0], CUSTOM))
    enc = adapter.encode(c, policy)
    texts = adapter.render_passes(c, policy)
    specials = [t.content for t in raw.get_added_tokens_decoder().values()]
    for item, text in zip(enc.items, texts, strict=True):
        ours = [*item.prefix_ids, *item.tail_ids]
        control = [t for t in ours if raw.id_to_token(t) in specials]
        assert len(control) == 5  # start/end of role x2 + end_of_text, whatever the content
        if not any(s in t.content for t in c.turns for s in specials):
            assert ours == raw.encode(text.full, add_special_tokens=False).ids


def test_multi_pass_encoding(adapter: GraniteGuardianAdapter, tok: Tokenizer) -> None:
    c = _conv(((U, "hi"), (A, "hello")))
    enc = adapter.encode(c, GRANITE_GUARDIAN_3)
    assert len(enc.items) == 7 and enc.item is enc.items[0]
    assert enc.category_codes == tuple((cat.code,) for cat in GRANITE_GUARDIAN_3.categories)
    assert enc.role is A
    prefixes = {item.prefix_ids for item in enc.items}
    assert len(prefixes) == 1  # one shared prefix (cached), definitions are in the tails
    no, yes = adapter.verdict_token_ids
    assert tok.decode([no]) == "No" and tok.decode([yes]) == "Yes"
    for item in enc.items:
        (readout,) = item.readouts
        assert readout.position == len(item.tail_ids) - 1
        assert readout.with_logsumexp
        assert readout.token_ids[0] == no and yes in readout.token_ids


def _readout(adapter: GraniteGuardianAdapter, p_no: float, p_yes: float) -> ReadoutResult:
    """Logits putting ``p_no``/``p_yes`` on "No"/"Yes" (other variants: nothing)."""
    n_no = len(adapter._no)
    n_yes = len(adapter._yes)
    logits = [math.log(p_no), *([-math.inf] * (n_no - 1)), math.log(p_yes)]
    logits += [-math.inf] * (n_yes - 1)
    return ReadoutResult(logits=tuple(logits), logsumexp=0.0)  # full-vocab normaliser = 1


def test_scores_hand_computed(adapter: GraniteGuardianAdapter) -> None:
    policy = Policy((Category("harm", "harm"), Category("violence", "violence"), CUSTOM), name="g")
    enc = adapter.encode(_conv(((U, "hi"),)), policy)
    results = [
        ScoreResult((_readout(adapter, 0.6, 0.2),), computed_tokens=5, cached_tokens=3),
        ScoreResult((_readout(adapter, 0.1, 0.8),), computed_tokens=5, cached_tokens=3),
        ScoreResult((_readout(adapter, 0.45, 0.45),), computed_tokens=5, cached_tokens=3),
    ]
    merged = merge_results(results)
    assert merged.computed_tokens == 15 and merged.cached_tokens == 9
    v = adapter.interpret(enc, merged, 0.5, TIMINGS)
    scores = {s.code: s.score for s in v.category_scores}
    assert scores["harm"] == pytest.approx(0.25)
    assert scores["violence"] == pytest.approx(0.8 / 0.9)
    assert scores["pii"] == pytest.approx(0.5)
    assert v.unsafe_score == pytest.approx(0.8 / 0.9)
    assert v.label is VerdictLabel.UNSAFE
    assert [s.code for s in v.violated] == ["violence", "pii"]  # >= threshold, policy order
    assert v.verdict_token_mass == pytest.approx(0.8)  # the smallest P(yes) + P(no)
    assert v.policy_id == f"g@{policy.policy_hash}"
    high = adapter.interpret(enc, merged, 0.95, TIMINGS)
    assert high.label is VerdictLabel.SAFE and high.violated == ()


def test_variants_are_summed(adapter: GraniteGuardianAdapter) -> None:
    """Case/space variants count as the same answer (the model card's recipe)."""
    enc = adapter.encode(_conv(((U, "hi"),)), Policy((Category("harm", "harm"),)))
    n_no, n_yes = len(adapter._no), len(adapter._yes)
    logits = [math.log(0.1)] * n_no + [math.log(0.2)] * n_yes
    res = ScoreResult((ReadoutResult(tuple(logits), 0.0),), computed_tokens=1, cached_tokens=0)
    v = adapter.interpret(enc, res, 0.5, TIMINGS)
    assert v.unsafe_score == pytest.approx(0.2 * n_yes / (0.2 * n_yes + 0.1 * n_no))


@pytest.mark.parametrize(
    "res",
    [
        ScoreResult((), computed_tokens=0, cached_tokens=0),
        ScoreResult((ReadoutResult((0.0,), 0.0),), computed_tokens=0, cached_tokens=0),
    ],
)
def test_malformed_results_are_refused(adapter: GraniteGuardianAdapter, res: ScoreResult) -> None:
    enc = adapter.encode(_conv(((U, "hi"),)), Policy((Category("harm", "harm"),)))
    with pytest.raises(ValueError):
        adapter.interpret(enc, res, 0.5, TIMINGS)


def test_conventions_and_hash(adapter: GraniteGuardianAdapter) -> None:
    assert adapter.family == "granite-guardian-3"
    assert adapter.candidate_conventions == ("yes-no",)
    assert adapter.with_convention("yes-no") is adapter
    assert len(adapter.template_hash) == 64
    with pytest.raises(ValueError):
        adapter.with_convention("space")


def test_tokenizer_without_role_tokens_is_refused(llama3_tokenizer: Tokenizer) -> None:
    with pytest.raises(ValueError, match="start_of_role"):
        GraniteGuardianAdapter(llama3_tokenizer)
