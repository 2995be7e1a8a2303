"""guardwire_server.truncation.drop_oldest_turns: drops whole pairs from the start, never the
assessed
turn, never leaves an assistant-first conversation, and says how many turns it dropped."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardwire_server.domain import Conversation, Role, Turn
from guardwire_server.truncation import drop_oldest_turns


def conv(n: int, size: int = 10) -> Conversation:
    return Conversation(
        tuple(Turn(Role.USER if i % 2 == 0 else Role.ASSISTANT, "x" * size) for i in range(n))
    )


def tokens(c: Conversation) -> int:
    return 5 + sum(len(t.content) + 2 for t in c.turns)  # a prompt: fixed part + turns


def test_fitting_conversation_is_untouched() -> None:
    c = conv(6)
    assert drop_oldest_turns(c, tokens, 1000) == (c, 0)


@pytest.mark.parametrize("n", [3, 4, 7, 8])
def test_drops_the_fewest_pairs_that_fit(n: int) -> None:
    c = conv(n)
    limit = 5 + 12 * 2  # room for two turns
    out, dropped = drop_oldest_turns(c, tokens, limit)
    assert out.turns == c.turns[dropped:]
    assert dropped % 2 == 0 and out.turns[0].role is Role.USER
    assert out.turns[-1] is c.turns[-1]
    assert tokens(out) <= limit
    assert dropped == 0 or tokens(Conversation(c.turns[dropped - 2 :])) > limit


@pytest.mark.parametrize("n", [2, 3, 5, 6])
def test_nothing_fits_keeps_the_shortest_valid_suffix(n: int) -> None:
    c = conv(n)
    out, dropped = drop_oldest_turns(c, tokens, 1)
    assert out.turns[-1] is c.turns[-1] and out.turns[0].role is Role.USER
    assert len(out.turns) == (1 if c.turns[-1].role is Role.USER else 2)
    assert dropped == n - len(out.turns)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=30), st.integers(1, 400))
def test_property(sizes: list[int], limit: int) -> None:
    c = Conversation(
        tuple(
            Turn(Role.USER if i % 2 == 0 else Role.ASSISTANT, "x" * s) for i, s in enumerate(sizes)
        )
    )
    calls = []

    def count(x: Conversation) -> int:
        calls.append(x)
        return tokens(x)

    out, dropped = drop_oldest_turns(c, count, limit)
    assert out.turns == c.turns[dropped:] and out.turns[-1] is c.turns[-1]
    assert out.turns[0].role is Role.USER
    assert len(calls) <= 2 + len(sizes).bit_length()  # a binary search, not a scan
    shortest = 1 if c.turns[-1].role is Role.USER else 2
    if tokens(out) > limit:
        assert len(out.turns) == shortest
    elif dropped:
        assert tokens(Conversation(c.turns[dropped - 2 :])) > limit
