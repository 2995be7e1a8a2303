"""Shared checks of the Llama Guard 1/2/4 parity tests (the LG3 corpus, reused)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from guardwire_server.adapters.llama_guard import LlamaGuardAdapter
from guardwire_server.domain import Conversation, Policy, Role, Turn
from tests.unit.adapters.conftest import make_env
from tests.unit.adapters.test_llama_guard3_parity import CORPUS

__all__ = [
    "CORPUS",
    "TURNS",
    "conv",
    "has_special_string",
    "jinja",
    "messages",
    "prompt_ids",
]

TURNS = dict(CORPUS)


def conv(turns: tuple[tuple[Role, str], ...]) -> Conversation:
    return Conversation(tuple(Turn(role, content) for role, content in turns))


def messages(c: Conversation, *, parts: bool) -> list[dict[str, Any]]:
    return [
        {
            "role": t.role.value,
            "content": [{"type": "text", "text": t.content}] if parts else t.content,
        }
        for t in c.turns
    ]


def jinja(template: str, *, hf_whitespace: bool = True) -> Callable[..., str]:
    """``render(messages=..., **kwargs)`` like transformers' chat-template renderer."""
    return make_env(hf_whitespace=hf_whitespace).from_string(template).render  # type: ignore[no-any-return]


def prompt_ids(adapter: LlamaGuardAdapter, c: Conversation, policy: Policy) -> list[int]:
    """Our ids of the rendered prompt (prefix + tail up to the verdict position, inclusive),
    i.e. without the forced lead and the category probe."""
    item = adapter.encode(c, policy).item
    end = item.readouts[0].position + 1 - len(adapter.lead_ids)
    return [*item.prefix_ids, *item.tail_ids[:end]]


def has_special_string(c: Conversation, specials: Sequence[str]) -> bool:
    return any(s in t.content for t in c.turns for s in specials)
