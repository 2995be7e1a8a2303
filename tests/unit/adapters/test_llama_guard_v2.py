"""Llama Guard 2: byte parity with the HF template, token parity with the Llama 3 tokenizer, and
the two candidate answer conventions the load probe chooses from."""

from __future__ import annotations

from typing import Any

import pytest
import tokenizers
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from guardwire_server.adapters.llama_guard_v2 import LG2_FORMAT, LlamaGuard2Adapter
from guardwire_server.adapters.taxonomy import LLAMA_GUARD_2, exclude
from guardwire_server.adapters.tokenization import Tokenizer
from guardwire_server.domain import Category, Conversation, Policy, Role, Turn
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


@pytest.fixture(scope="module")
def adapter(llama3_tokenizer: Tokenizer) -> LlamaGuard2Adapter:
    return LlamaGuard2Adapter(llama3_tokenizer)


@pytest.fixture(scope="module")
def render() -> Any:
    return jinja(reference_template("meta-llama-guard-2-8b.chat_template.jinja"))


def _specials(raw: Any) -> list[str]:
    return [t.content for t in raw.get_added_tokens_decoder().values()]


def test_conventions_and_token_ids(adapter: LlamaGuard2Adapter) -> None:
    assert adapter.family == "llama-guard-2"
    assert adapter.candidate_conventions == ("space", "nospace")
    assert adapter.convention == "space"  # preferred; the probe decides on real weights
    assert adapter.verdict_token_ids == (6220, 20451)  # "Ġsafe", "Ġunsafe"
    nospace = adapter.with_convention("nospace")
    assert nospace.verdict_token_ids == (19193, 39257)  # "safe", "unsafe" (facts §2.3)
    assert nospace.convention == "nospace" and adapter.convention == "space"  # a copy
    assert nospace.template_hash != adapter.template_hash
    assert type(nospace) is LlamaGuard2Adapter
    with pytest.raises(ValueError, match="not usable"):
        adapter.with_convention("lead-nn")


@pytest.mark.parametrize("conv_id", [cid for cid, _ in CORPUS])
def test_render_matches_official_template(
    conv_id: str, adapter: LlamaGuard2Adapter, render: Any
) -> None:
    c = conv(TURNS[conv_id])
    text = adapter.render(c, LLAMA_GUARD_2)
    assert text.full == render(messages=messages(c, parts=False))
    assert text.full == jinja(
        reference_template("meta-llama-guard-2-8b.chat_template.jinja"), hf_whitespace=False
    )(messages=messages(c, parts=False))
    assert "S1: Violent Crimes. \nS2: Non-Violent Crimes. \n" in text.prefix
    assert "S5: Specialized Advice. \n" in text.prefix  # LG2's S5 is not LG3's Defamation
    assert text.suffix.endswith(" - If unsafe, a second line must include a comma-separated"
                                " list of violated categories. [/INST]")  # fmt: skip


@pytest.mark.parametrize("conv_id", [cid for cid, _ in CORPUS])
@pytest.mark.parametrize("convention", ["space", "nospace"])
def test_tokens_match_whole_string_encoding(
    conv_id: str, convention: str, adapter: LlamaGuard2Adapter, raw_llama3: Any
) -> None:
    a = adapter.with_convention(convention)
    c = conv(TURNS[conv_id])
    full = a.render(c, LLAMA_GUARD_2).full
    ours = prompt_ids(a, c, LLAMA_GUARD_2)
    assert ours[0] == 128000  # <|begin_of_text|>, pinned (llama.meta.com, Meta's scripts)
    assert all(t < 128000 for t in ours[1:])
    if not has_special_string(c, _specials(raw_llama3)):
        assert ours[1:] == raw_llama3.encode(full, add_special_tokens=False).ids


def test_tiktoken_agrees(adapter: LlamaGuard2Adapter) -> None:
    """Meta's tiktoken encoding of the rendered prompt (when tiktoken is installed)."""
    tiktoken = pytest.importorskip("tiktoken")
    from tests.reference_tokenizers import TOKENIZERS, load_tiktoken_ranks

    pattern = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
        r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    enc = tiktoken.Encoding(
        name="llama3",
        pat_str=pattern,
        mergeable_ranks=load_tiktoken_ranks(TOKENIZERS / "llama3" / "tokenizer.model"),
        special_tokens={},
    )
    for conv_id in ("single-user", "six-turns", "emoji", "code-block", "crlf", "very-long"):
        c = conv(TURNS[conv_id])
        full = adapter.render(c, LLAMA_GUARD_2).full
        assert prompt_ids(adapter, c, LLAMA_GUARD_2)[1:] == enc.encode_ordinary(full)


def test_prompt_length_from_facts(adapter: LlamaGuard2Adapter) -> None:
    """Facts §1.3: the LG2 prompt for a single user turn "x" is 191 tokens (without BOS)."""
    assert len(prompt_ids(adapter, conv(((U, "x"),)), LLAMA_GUARD_2)) - 1 == 191


@pytest.mark.parametrize(
    ("convention", "head"), [("space", (20451, 198, 50)), ("nospace", (39257, 198, 50))]
)
def test_readouts(adapter: LlamaGuard2Adapter, convention: str, head: tuple[int, ...]) -> None:
    a = adapter.with_convention(convention)
    enc = a.encode(conv(((U, "hi"), (A, "hello"))), LLAMA_GUARD_2)
    verdict, cats = enc.item.readouts
    assert enc.role is A
    assert enc.item.tail_ids[verdict.position] == 60  # "]" of [/INST]
    assert enc.item.tail_ids[verdict.position + 1 :] == head  # unsafe, "\n", "S"
    assert cats.token_ids == (16, 17, 18, 19, 20, 21, 22, 23, 24, 605, 806)  # "1".."11"
    assert enc.category_codes == tuple((f"S{i}",) for i in range(1, 12))


def test_excluded_and_custom_policies(adapter: LlamaGuard2Adapter, render: Any) -> None:
    c = conv(((U, "hi"),))
    text = adapter.render(c, exclude(LLAMA_GUARD_2, ["S5", "S6"])).full
    assert "S4: Child Exploitation. \nS7: Intellectual Property. \n" in text  # codes kept
    custom = Policy((Category("X1", "Spam.", "Unsolicited ads."),), name="c")
    assert "X1: Spam. \nUnsolicited ads.\n<END UNSAFE" in adapter.render(c, custom).prefix


def test_format_constants() -> None:
    assert LG2_FORMAT.bos == "<|begin_of_text|>"
    assert LG2_FORMAT.name_suffix == " "
    assert LG2_FORMAT.answer_context().endswith("categories. [/INST]")


_texts = st.lists(
    st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(["\n", "\n\n", " ", "\t", "\r\n", ":", "[", "]", "S1", "'s", "123"]),
    ),
    max_size=30,
).map("".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(contents=st.lists(_texts, min_size=1, max_size=4))
def test_token_parity_property(
    contents: list[str], adapter: LlamaGuard2Adapter, raw_llama3: tokenizers.Tokenizer
) -> None:
    assume(not any("<|" in c for c in contents))
    roles = [U if i % 2 == 0 else A for i in range(len(contents))]
    c = Conversation(tuple(Turn(r, x) for r, x in zip(roles, contents, strict=True)))
    full = adapter.render(c, LLAMA_GUARD_2).full
    ids = raw_llama3.encode(full, add_special_tokens=False).ids
    assert prompt_ids(adapter, c, LLAMA_GUARD_2)[1:] == ids
