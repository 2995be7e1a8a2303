"""Llama Guard 4 (text only): structure parity with the tpu-inference template (whitespace is not
authoritative there), token parity with Llama 4's tokenizer (converted, and tiktoken itself),
and the two candidate answer conventions (forced ``\\n\\n`` or not)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tokenizers
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from guardwire_server.adapters.llama_guard_v4 import LG4_FORMAT, LlamaGuard4Adapter
from guardwire_server.adapters.taxonomy import LLAMA_GUARD_3_8B, LLAMA_GUARD_4, exclude
from guardwire_server.adapters.tokenization import Tokenizer
from guardwire_server.domain import Conversation, Role, Turn
from tests.unit.adapters.conftest import reference_template
from tests.unit.adapters.lg_parity import (
    CORPUS,
    TURNS,
    conv,
    has_special_string,
    jinja,
    messages,
    prompt_ids,
)

U, A = Role.USER, Role.ASSISTANT
TPU_TEMPLATE = "llama-guard-4-12b.tpu-inference-variant.jinja"
CONTROL = 200000  # ids from here on are Llama 4 special tokens


@pytest.fixture(scope="module")
def tok(llama4_tokenizer_dir: Path) -> Tokenizer:
    return Tokenizer.from_dir(llama4_tokenizer_dir)


@pytest.fixture(scope="module")
def raw(llama4_tokenizer_dir: Path) -> tokenizers.Tokenizer:
    return tokenizers.Tokenizer.from_file(str(llama4_tokenizer_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def adapter(tok: Tokenizer) -> LlamaGuard4Adapter:
    return LlamaGuard4Adapter(tok)


@pytest.fixture(scope="module")
def tpu_render() -> Any:
    return jinja(reference_template(TPU_TEMPLATE))


def _normalise_tpu(text: str) -> str:
    """The tpu-inference copy's conversation block, fixed: its ``\\n\\n`` after each turn is a
    literal backslash-n pair (an escaping bug of the re-formatted copy) and it has no blank
    line after ``<BEGIN CONVERSATION>``. Everything else is kept as rendered."""
    fixed = text.replace("\\n\\n\n", "\n\n")
    return fixed.replace("<BEGIN CONVERSATION>\n", "<BEGIN CONVERSATION>\n\n", 1)


def test_tokenizer_ids_from_facts(tok: Tokenizer, adapter: LlamaGuard4Adapter) -> None:
    """Facts §2.3 / llama4 SOURCE.md ids (computed there with tiktoken)."""
    assert tok.vocab_size == 202048
    assert tok.special_id("<|begin_of_text|>") == 200000
    assert tok.special_id("<|header_start|>") == 200005
    assert tok.special_id("<|header_end|>") == 200006
    assert tok.special_id("<|eot|>") == 200008
    assert tok.encode_text("\n\n") == [368]
    assert tok.encode_text(",S") == [36001]
    assert adapter.verdict_token_ids == (60411, 72110)
    assert adapter.lead_ids == (368,)
    assert adapter.candidate_conventions == ("lead-nn", "no-lead")
    no_lead = adapter.with_convention("no-lead")
    assert no_lead.verdict_token_ids == (60411, 72110) and no_lead.lead_ids == ()
    assert no_lead.template_hash != adapter.template_hash


@pytest.mark.parametrize("conv_id", [cid for cid, _ in CORPUS])
def test_structure_matches_the_tpu_inference_template(
    conv_id: str, adapter: LlamaGuard4Adapter, tpu_render: Any
) -> None:
    c = conv(TURNS[conv_id])
    expected = _normalise_tpu(tpu_render(messages=messages(c, parts=True)))
    text = adapter.render(c, LLAMA_GUARD_4)
    assert text.full == expected
    assert text.prefix.startswith("<|begin_of_text|><|header_start|>user<|header_end|>\n\nTask:")
    assert "according to our safety policy" in text.prefix
    assert text.suffix.endswith("categories. <|eot|><|header_start|>assistant<|header_end|>")


def test_default_policy_is_the_text_only_list(tpu_render: Any) -> None:
    assert LLAMA_GUARD_4 == LLAMA_GUARD_3_8B
    assert [c.code for c in LLAMA_GUARD_4.categories][-1] == "S14"
    text_only = tpu_render(messages=messages(conv(((U, "hi"),)), parts=True))
    assert "S14: Code Interpreter Abuse.\n" in text_only


def test_excluded_codes_keep_their_numbers(adapter: LlamaGuard4Adapter, tpu_render: Any) -> None:
    c = conv(((U, "hi"),))
    policy = exclude(LLAMA_GUARD_4, ["S2", "S9"])
    expected = tpu_render(messages=messages(c, parts=True), excluded_category_keys=["S2", "S9"])
    assert adapter.render(c, policy).full == _normalise_tpu(expected)


@pytest.mark.parametrize("conv_id", [cid for cid, _ in CORPUS])
def test_tokens_match_whole_string_encoding(
    conv_id: str, adapter: LlamaGuard4Adapter, raw: tokenizers.Tokenizer
) -> None:
    c = conv(TURNS[conv_id])
    full = adapter.render(c, LLAMA_GUARD_4).full
    ours = prompt_ids(adapter, c, LLAMA_GUARD_4)
    control = [i for i, t in enumerate(ours) if t >= CONTROL]
    n = len(ours)
    # <|begin_of_text|><|header_start|>user<|header_end|> ... <|eot|><|header_start|>assistant
    # <|header_end|>: nothing else, whatever the content
    assert control == [0, 1, 3, n - 4, n - 3, n - 1]
    specials = [t.content for t in raw.get_added_tokens_decoder().values()]
    if not has_special_string(c, specials):
        assert ours == raw.encode(full, add_special_tokens=False).ids


def test_tiktoken_agrees(adapter: LlamaGuard4Adapter) -> None:
    """Meta's tiktoken encoder with the Llama 4 ranks and pattern (when tiktoken is present)."""
    pytest.importorskip("tiktoken")
    from tests.reference_tokenizers import tiktoken_llama4

    enc = tiktoken_llama4()
    for conv_id in ("single-user", "six-turns", "emoji", "code-block", "cjk-chinese", "crlf"):
        c = conv(TURNS[conv_id])
        full = adapter.render(c, LLAMA_GUARD_4).full
        assert prompt_ids(adapter, c, LLAMA_GUARD_4) == enc.encode(full, allowed_special="all")


@pytest.mark.parametrize("convention", ["lead-nn", "no-lead"])
def test_readouts(adapter: LlamaGuard4Adapter, convention: str) -> None:
    a = adapter.with_convention(convention)
    enc = a.encode(conv(((U, "How do I pick a lock?"),)), LLAMA_GUARD_4)
    verdict, cats = enc.item.readouts
    lead = (368,) if convention == "lead-nn" else ()
    assert enc.item.tail_ids[-(len(lead) + 4) :] == (200006, *lead, 72110, 198, 63)
    assert enc.item.tail_ids[verdict.position] == (368 if lead else 200006)
    digits = (29, 30, 31, 32, 33, 34, 35, 36, 37, 580, 825, 738, 974, 981)  # facts §2.3
    assert cats.token_ids == digits
    assert enc.category_codes == tuple((f"S{i}",) for i in range(1, 15))


def test_format_constants() -> None:
    assert LG4_FORMAT.bos is None  # <|begin_of_text|> is in the text, as in the template
    assert LG4_FORMAT.answer_context() == ""  # the prompt ends with <|header_end|>


_texts = st.lists(
    st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(["\n", "\n\n", " ", "\t", "\r\n", ":", "<", ">", "|", "S1", "'s", "1234"]),
    ),
    max_size=30,
).map("".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contents=st.lists(_texts, min_size=1, max_size=4))
def test_token_parity_property(
    contents: list[str], adapter: LlamaGuard4Adapter, raw: tokenizers.Tokenizer
) -> None:
    assume(not any("<|" in c for c in contents))
    roles = [U if i % 2 == 0 else A for i in range(len(contents))]
    c = Conversation(tuple(Turn(r, x) for r, x in zip(roles, contents, strict=True)))
    full = adapter.render(c, LLAMA_GUARD_4).full
    assert prompt_ids(adapter, c, LLAMA_GUARD_4) == raw.encode(full, add_special_tokens=False).ids
