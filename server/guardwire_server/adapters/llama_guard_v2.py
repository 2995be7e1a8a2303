"""Llama Guard 2 (``meta-llama/Meta-Llama-Guard-2-8B``): Llama 3 tokenizer, categories S1..S11.

Prompt text: byte-identical to the HF chat template (``meta-llama-guard-2-8b.chat_template.jinja``,
identical to llama-cookbook's ``build_default_prompt(..., LLAMA_GUARD_2)``): Llama 3 based but with
``[INST] `` / `` [/INST]`` as *text*, every category line ending in ``". "``
(``S1: Violent Crimes. ``; the trailing space is the format's, added to custom names too),
"ONLY THE LAST {role} message" and bullets with a leading space. LG2's codes differ from LG3's
from S5 on (LG2 S5 = Specialized Advice).

BOS, pinned: ``<|begin_of_text|>`` prepended by id (llama.meta.com's LG2 page and Meta's recipe
scripts, which tokenize with ``tokenizer([prompt])``, have it; the HF template path has none --
llama-cookbook issue #617). ``render()`` is the template's text.

Answer, **unverified**: after ``[/INST]`` the first answer token is either `` safe``
(``Ġsafe`` 6220 / ``Ġunsafe`` 20451 -- the llama-recipes fine-tuning formatter joins prompt and
answer with a space) or ``safe`` (19193 / 39257). Both are offered (``space`` preferred); the
server's load probe keeps the one the model puts its probability mass on.
"""

from __future__ import annotations

from guardwire_server.adapters.llama_guard import (
    CATEGORIES_END,
    INSTRUCTIONS,
    TASK,
    AnswerConvention,
    LlamaGuardAdapter,
    LlamaGuardFormat,
)
from guardwire_server.adapters.taxonomy import LLAMA_GUARD_2
from guardwire_server.adapters.tokenization import Tokenizer

__all__ = ["LG2_FORMAT", "NOSPACE", "SPACE", "LlamaGuard2Adapter"]

SPACE = AnswerConvention("space", "", " ", "verdict word after '[/INST]' with a space: 'Ġsafe'")
NOSPACE = AnswerConvention("nospace", "", "", "verdict word right after '[/INST]': 'safe'")

LG2_FORMAT = LlamaGuardFormat(
    version="Llama Guard 2",
    family="llama-guard-2",
    head=("[INST] ",),
    task=TASK,
    categories_end=CATEGORIES_END,
    instructions=INSTRUCTIONS,
    tail=(" [/INST]",),
    conventions=(SPACE, NOSPACE),
    default_policy=LLAMA_GUARD_2,
    name_suffix=" ",
    bos="<|begin_of_text|>",
)


class LlamaGuard2Adapter(LlamaGuardAdapter):
    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        convention: str | None = None,
        category_threshold: float = 0.3,
    ) -> None:
        super().__init__(
            tokenizer, LG2_FORMAT, convention=convention, category_threshold=category_threshold
        )
