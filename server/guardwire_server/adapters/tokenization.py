"""Injection-safe tokenization for prompt templates, on the ``tokenizers`` library only.

A rendered prompt string must never be tokenized as a whole: user text containing ``<|eot_id|>``
would become a real control token (prompt injection). Instead the adapter hands us *segments*:
template special tokens (mapped to their ids) and text pieces (encoded with special-token strings
treated as plain text). For text without special-token strings the ids equal the whole-string
encoding, because the tokenizer itself splits the string at special tokens before encoding.

Usage::

    tok = Tokenizer.from_dir("/models/Llama-Guard-3-1B")
    ids = tok.encode_segments([Special("<|begin_of_text|>"), "Task: ..."])

Text that continues other text (not a special token) can be encoded ``after`` a context string: the
context is encoded with the text and its tokens are dropped. SentencePiece tokenizers (Llama 2)
need this, because every separate ``encode`` call starts a word with the ``▁`` dummy prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import tokenizers

__all__ = ["Segment", "Special", "Tokenizer"]


@dataclass(frozen=True, slots=True)
class Special:
    """A template control token, written by its string form (e.g. ``"<|eot_id|>"``)."""

    token: str


Segment = str | Special
"""A text piece (encoded as plain text) or a special token (mapped to its id)."""


_MAX_CACHED_CONTEXTS = 64


class Tokenizer:
    """Wraps a ``tokenizers.Tokenizer``; safe to call from several threads.

    Takes ownership of ``tokenizer`` and sets ``encode_special_tokens`` on it once, here: special
    tokens only ever come from ``Special`` segments, by id, so text never needs the other mode, and
    no call toggles shared state. ``encode``/``decode`` of the Rust tokenizer take ``&self`` and
    need no lock.
    """

    def __init__(self, tokenizer: tokenizers.Tokenizer) -> None:
        added = tokenizer.get_added_tokens_decoder()
        # Added tokens that are not "special" would still be matched inside user text.
        non_special = sorted(a.content for a in added.values() if not a.special)
        if non_special:
            raise ValueError(
                "tokenizer has non-special added tokens, which user text could produce: "
                + ", ".join(non_special[:5])
            )
        tokenizer.encode_special_tokens = True
        self._tok = tokenizer
        self._specials: dict[str, int] = {a.content: i for i, a in added.items()}
        # encodings of ``after`` contexts: a handful of constant template strings (e.g. the end
        # of the categories block), so caching them saves one of the encodes of every request
        self._contexts: dict[str, tuple[int, ...]] = {}

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """Load ``tokenizer.json`` from a model (or tokenizer) directory."""
        file = Path(path) / "tokenizer.json"
        if not file.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {path}")
        return cls(tokenizers.Tokenizer.from_file(str(file)))

    @classmethod
    def from_file(cls, file: str | Path) -> Tokenizer:
        return cls(tokenizers.Tokenizer.from_file(str(file)))

    @property
    def vocab_size(self) -> int:
        """Size of the id space, added tokens included."""
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of every special (control) token."""
        return frozenset(self._specials.values())

    def encode_text(self, text: str, *, after: str = "") -> list[int]:
        """Encode ``text`` with special-token strings as plain text, without BOS/EOS.

        ``after``: the text that precedes ``text`` in the prompt (not a special token). The two
        are encoded together and the context's tokens dropped; ValueError when the context's
        tokens are not a prefix of the joint encoding (``text`` would not start on a token
        boundary, so no split of the prompt there is token-exact)."""
        if not text:
            return []
        if not after:
            ids: list[int] = self._tok.encode(text, add_special_tokens=False).ids
            return ids
        context = self._contexts.get(after)
        if context is None:
            context = tuple(self._tok.encode(after, add_special_tokens=False).ids)
            if len(self._contexts) < _MAX_CACHED_CONTEXTS:
                self._contexts[after] = context
        joint: list[int] = self._tok.encode(after + text, add_special_tokens=False).ids
        if tuple(joint[: len(context)]) != context:
            raise ValueError(
                f"{text[:40]!r} does not start on a token boundary after {after[-40:]!r}"
            )
        return joint[len(context) :]

    def special_id(self, token: str) -> int:
        """The id of special token ``token``; ValueError when the tokenizer lacks it."""
        try:
            return self._specials[token]
        except KeyError:
            raise ValueError(f"tokenizer has no special token {token!r}") from None

    def encode_segments(self, segments: Iterable[Segment], *, after: str = "") -> list[int]:
        """Encode segments; adjacent text pieces are joined first so that splitting a piece of
        text never changes its tokenization. ``after`` is the text context of a leading text
        piece (see ``encode_text``); text that follows a special token needs none."""
        ids: list[int] = []
        pending: list[str] = []
        context = after
        for seg in segments:
            if isinstance(seg, Special):
                ids += self.encode_text("".join(pending), after=context)
                pending.clear()
                context = ""
                ids.append(self.special_id(seg.token))
            else:
                pending.append(seg)
        ids += self.encode_text("".join(pending), after=context)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Decode ids, special tokens included (a debugging aid)."""
        text: str = self._tok.decode(list(ids), skip_special_tokens=False)
        return text
