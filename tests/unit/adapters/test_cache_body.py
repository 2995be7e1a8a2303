"""``encode(..., cache_body=True)``: the conversation moves into the cacheable prefix (stream
checks), the token sequence the model sees does not change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from guardwire_backends.base import ScoreItem
from guardwire_server.adapters.common import BODY_CACHE_MARGIN, split_body
from guardwire_server.adapters.llama_guard import LlamaGuard3Adapter, LlamaGuardAdapter
from guardwire_server.adapters.tokenization import Tokenizer
from guardwire_server.domain import Conversation, Role, Turn

U, A = Role.USER, Role.ASSISTANT
RESPONSE = (
    "Sure! Here is a recipe: mix 500 g of flour with 320 ml water, add   salt, then knead "
    "the dough for 10 minutes.\n\nBake at 230°C. Don't open the oven <|eot_id|> early, ok?"
)
CONVERSATIONS = [
    Conversation((Turn(U, "How do I make bread?"),)),
    Conversation((Turn(U, "hi"), Turn(A, "hello"))),
    Conversation((Turn(U, "  padded  "), Turn(A, RESPONSE))),
    Conversation(
        (Turn(U, "q1"), Turn(A, "a1"), Turn(U, "Ünïcödé 🍞 question?"), Turn(A, RESPONSE[:40]))
    ),
    Conversation((Turn(U, "x"),)),
]


def _absolute(item: ScoreItem) -> list[tuple[int, tuple[int, ...], bool]]:
    n, t = len(item.prefix_ids), len(item.tail_ids)
    return [
        (n + (r.position if r.position >= 0 else t + r.position), r.token_ids, r.with_logsumexp)
        for r in item.readouts
    ]


def _check_same_sequence(adapter: LlamaGuardAdapter) -> None:
    policy = adapter.default_policy
    moved = []
    for conv in CONVERSATIONS:
        plain = adapter.encode(conv, policy)
        cached = adapter.encode(conv, policy, cache_body=True)
        a, b = plain.item, cached.item
        assert a.prefix_ids + a.tail_ids == b.prefix_ids + b.tail_ids
        assert _absolute(a) == _absolute(b)  # the same tokens are read out
        assert b.prefix_ids[: len(a.prefix_ids)] == a.prefix_ids  # the policy prefix leads
        moved.append(len(b.prefix_ids) - len(a.prefix_ids))
        # the margin and the whole assessment suffix stay in the tail
        assert len(b.tail_ids) >= BODY_CACHE_MARGIN + len(adapter.lead_ids) + 1
        assert (cached.role, cached.category_codes) == (plain.role, plain.category_codes)
    # the conversation joins the prefix, but for its last few tokens
    assert moved[2] > 20 and moved[3] > 10 and moved[4] <= 1  # "x": a few tokens in all


@pytest.fixture(scope="module")
def lg3_1b(llama3_tokenizer: Tokenizer) -> LlamaGuard3Adapter:
    return LlamaGuard3Adapter(llama3_tokenizer, "1b")


@pytest.mark.parametrize("variant", ["1b", "8b"])
def test_lg3_same_token_sequence(llama3_tokenizer: Tokenizer, variant: str) -> None:
    _check_same_sequence(LlamaGuard3Adapter(llama3_tokenizer, variant))  # type: ignore[arg-type]


def test_lg2_same_token_sequence(llama3_tokenizer: Tokenizer) -> None:
    from guardwire_server.adapters.llama_guard_v2 import LlamaGuard2Adapter

    _check_same_sequence(LlamaGuard2Adapter(llama3_tokenizer))


def test_lg4_same_token_sequence(llama4_tokenizer_dir: Path) -> None:
    from guardwire_server.adapters.llama_guard_v4 import LlamaGuard4Adapter

    _check_same_sequence(LlamaGuard4Adapter(Tokenizer.from_dir(llama4_tokenizer_dir)))


def test_lg1_same_token_sequence(llama2_tokenizer_dir: Path) -> None:
    from guardwire_server.adapters.llama_guard_v1 import LlamaGuard1Adapter

    _check_same_sequence(LlamaGuard1Adapter(Tokenizer.from_dir(llama2_tokenizer_dir)))


def test_growing_response_prefixes_chain(lg3_1b: LlamaGuard3Adapter) -> None:
    """Checks of a response as it is generated: each check's cacheable prefix is an exact token
    prefix of the next check's sequence, so a backend extends it instead of recomputing."""
    policy = lg3_1b.default_policy
    words = RESPONSE.split(" ")
    prev: tuple[int, ...] | None = None
    chained = 0
    for n in range(1, len(words) + 1):
        text = " ".join(words[:n])
        item = lg3_1b.encode(
            Conversation((Turn(U, "How do I make bread?"), Turn(A, text))), policy, cache_body=True
        ).item
        full = item.prefix_ids + item.tail_ids
        if prev is not None:
            chained += full[: len(prev)] == prev
        prev = item.prefix_ids
    assert chained == len(words) - 1


def test_split_body_keeps_the_concatenation() -> None:
    prefix, text = (1, 2), (3, 4, 5, 6, 7, 8, 9)
    assert split_body(prefix, text, 2, 3) == ((1, 2, 3, 4), (5, 6, 7, 8, 9))
    assert split_body(prefix, text, 6, 3) == ((1, 2), text)  # nothing to move
    assert split_body(prefix, text, 0, 0) == ((1, 2, *text), ())
    for suffix_len in range(9):
        p, t = split_body(prefix, text, suffix_len)
        assert p + t == prefix + text


def test_empty_conversation_still_rejected(lg3_1b: Any) -> None:
    with pytest.raises(ValueError, match="empty conversation"):
        lg3_1b.encode(Conversation(()), lg3_1b.default_policy, cache_body=True)
