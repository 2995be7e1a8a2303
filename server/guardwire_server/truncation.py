"""The opt-in truncation policy for conversations longer than ``max_prompt_tokens``.

``truncate: reject`` (the default) answers INVALID_ARGUMENT / LIMIT_EXCEEDED naming
``max_prompt_tokens``: nothing is ever cut silently. ``truncate: drop_oldest_turns`` drops the
oldest turns, a user/assistant pair at a time, until the prompt fits, and the response says how
many were dropped (``ClassifyResponse.truncated_turns``). It never drops the assessed (last)
turn, and never leaves a conversation that starts with an assistant turn: the shortest
conversation it produces is the last turn (a user turn) or the last user turn plus the assessed
assistant turn. When even that is too long, the request is rejected as with ``reject``.

Example::

    conversation, dropped = drop_oldest_turns(conversation, count, max_tokens=8192)
"""

from __future__ import annotations

from collections.abc import Callable

from guardwire_server.domain import Conversation, Role

__all__ = ["TRUNCATE_POLICIES", "drop_oldest_turns"]

TRUNCATE_POLICIES = ("reject", "drop_oldest_turns")


def drop_oldest_turns(
    conversation: Conversation, count_tokens: Callable[[Conversation], int], max_tokens: int
) -> tuple[Conversation, int]:
    """The longest suffix of ``conversation`` that starts with a user turn, keeps the last turn
    and fits ``max_tokens`` (per ``count_tokens``), with the number of turns dropped. When no
    suffix fits, the shortest allowed one is returned (the caller's limit check rejects it).

    ``count_tokens`` is called O(log n) times (a binary search: dropping turns never makes the
    prompt longer)."""
    turns = conversation.turns
    if len(turns) <= 1 or count_tokens(conversation) <= max_tokens:
        return conversation, 0
    last = len(turns) - 1
    latest = last if turns[last].role is Role.USER else last - 1  # where the shortest one starts
    # candidate starts: user turns (even indexes in a valid conversation) 2, 4, ..., latest
    starts = [k for k in range(2, latest + 1) if turns[k].role is Role.USER]
    if not starts:
        return conversation, 0
    lo, hi = 0, len(starts) - 1  # find the first start whose suffix fits
    while lo < hi:
        mid = (lo + hi) // 2
        if count_tokens(Conversation(turns[starts[mid] :])) <= max_tokens:
            hi = mid
        else:
            lo = mid + 1
    k = starts[lo]
    return Conversation(turns[k:]), k
