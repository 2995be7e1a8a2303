"""Llama Guard 4 (``meta-llama/Llama-Guard-4-12B``), text-only conversations, Llama 4 tokens.

No verbatim copy of the HF ``chat_template.json`` was available. What we render, and why:

* Tokens ``<|begin_of_text|><|header_start|>user<|header_end|>`` ... ``<|eot|><|header_start|>
  assistant<|header_end|>`` (llama.com's LG4 page, the tpu-inference template).
* "according **to** our safety policy" (LG4 material; LG1-3 say "according our").
* Whitespace: Llama Guard 3 1B's, which is what the tpu-inference template
  (``llama-guard-4-12b.tpu-inference-variant.jinja``) renders to under transformers' Jinja
  settings everywhere except its conversation block -- ``\\n\\n`` after the user header, a blank
  line after each block, `` <|eot|>`` with a space (as LG3-1B's `` <|eot_id|>``), nothing after
  the assistant header. Its conversation block emits a *literal* backslash-n pair and no blank
  line after ``<BEGIN CONVERSATION>`` -- an evident escaping bug of that re-formatted copy; we
  use the ``{User,Agent}: text\\n\\n`` turns of every other Llama Guard template.
* Default categories S1..S14 (the LG3 8B list; S14 is dropped only when images are present).

Answer, **unverified**: LG3 always generates ``\\n\\n`` (368 in Llama 4) first because its
template stops at the assistant header; LG4's template (as reconstructed) stops there too, so the
preferred convention forces ``\\n\\n`` (``lead-nn``); ``no-lead`` reads ``safe``/``unsafe``
(60411/72110) right after the header. The server's load probe keeps the one the model supports.
"""

from __future__ import annotations

from guardwire_server.adapters.llama_guard import (
    CATEGORIES_END,
    INSTRUCTIONS,
    LEAD_NN,
    AnswerConvention,
    LlamaGuardAdapter,
    LlamaGuardFormat,
)
from guardwire_server.adapters.taxonomy import LLAMA_GUARD_4
from guardwire_server.adapters.tokenization import Special, Tokenizer

__all__ = ["LG4_FORMAT", "LlamaGuard4Adapter"]

NO_LEAD = AnswerConvention("no-lead", "", "", "read safe/unsafe right after the assistant header")
_BOT, _HS, _HE, _EOT = (
    Special("<|begin_of_text|>"),
    Special("<|header_start|>"),
    Special("<|header_end|>"),
    Special("<|eot|>"),
)

LG4_FORMAT = LlamaGuardFormat(
    version="Llama Guard 4",
    family="llama-guard-4",
    head=(_BOT, _HS, "user", _HE),
    task=(
        "\n\nTask: Check if there is unsafe content in '{role}' messages in conversations"
        " according to our safety policy with the below categories.\n\n"
        "<BEGIN UNSAFE CONTENT CATEGORIES>\n"
    ),
    categories_end=CATEGORIES_END,
    instructions=INSTRUCTIONS,
    tail=(" ", _EOT, _HS, "assistant", _HE),
    conventions=(LEAD_NN, NO_LEAD),
    default_policy=LLAMA_GUARD_4,
)


class LlamaGuard4Adapter(LlamaGuardAdapter):
    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        convention: str | None = None,
        category_threshold: float = 0.3,
    ) -> None:
        super().__init__(
            tokenizer, LG4_FORMAT, convention=convention, category_threshold=category_threshold
        )
