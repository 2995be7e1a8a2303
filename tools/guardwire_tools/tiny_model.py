"""Tiny random-weight Llama Guard 3 style models, written as normal Hugging Face directories.

Tests and local runs need a model that loads through the real code path (``from_pretrained``,
the Llama architecture, the Llama 3 tokenizer and token ids) in seconds. Random weights are not
enough: the server's load probe checks that P(safe) + P(unsafe) over the full vocabulary is high
at the verdict position, and a random model spreads its mass over 128k tokens. So the weights
are *rigged* (``rigged=True``), deterministically from ``seed``:

* **Constant direction.** Embedding dim 0 is a large constant ``C`` for every token. The
  attention ``o_proj`` and MLP ``down_proj`` rows of the reserved dims are zero and the layer
  norms give them weight 0, so the random layers neither read nor change them and they reach the
  final norm intact. The lm_head rows of the rigged tokens ("safe", "unsafe", "S", "1".."14",
  ",S") read dim 0 strongly, the other 128k rows not at all: at *every* position nearly all the
  full-vocabulary mass sits on the rigged tokens, most of it on safe/unsafe.
* **Modes.** Dims 1/2 are indicators of the current token: "\\n" (then "S" dominates) and "S" or
  ",S" (then the number tokens dominate), so teacher-forced category readouts
  (``unsafe\\nS`` -> number) also see their tokens carry the mass, as in the real model.
* **Input dependence.** Dims 3/4 carry a random per-token "signal", zero for special tokens and
  for every token of the official chat template (when the template file is present), so the
  fixed policy text contributes nothing. Layer 0, head 0 has a zero query, i.e. uniform causal
  attention: it writes the running mean of the signal into dims 5/6, which the lm_head reads
  as the unsafe-minus-safe direction (dim 5) and per-category offsets (dim 6). The gains are
  calibrated at build time on template prompts with random 12-token conversations, so
  P(unsafe | safe or unsafe) has a spread of about 0.05..0.95 across conversations, centred on
  0.5. Without the template file the fixed text carries signal too, so the centre drifts.
* Everything else (other dims, other heads, MLPs, the rest of the lm_head) is random, with
  sharp enough attention that position or mask bugs change the numbers.

``rigged=False`` gives a plain ``LlamaForCausalLM`` random init (mass spread over the
vocabulary), for testing that the probe refuses to serve.

``family`` picks the guard family whose chat template, special tokens and answer tokens the
model gets (``FAMILY_RIGS``): the Llama Guard versions (pass the matching real tokenizer:
Llama 2 for ``llama-guard-1``, Llama 3 for 2/3, Llama 4 for 4) and ``granite-guardian-3`` (a
small trained byte-level BPE with Granite's role tokens when no tokenizer is given). The
architecture is always ``LlamaForCausalLM``: these are format fixtures, not model replicas. Per
family the rig puts the verdict mass on the tokens that family's *answer convention* reads --
Llama Guard 2's `` safe``/`` unsafe`` (the space variant) and, for Llama Guard 4, only after the
forced ``\\n\\n`` (``lead_gated``) -- so the server's load probe has a right answer to find.
"""

from __future__ import annotations

import functools
import json
import math
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

__all__ = [
    "FAMILY_RIGS",
    "RIG",
    "FamilyRig",
    "RigParams",
    "default_tokenizer_dir",
    "make_test_model",
    "rigged_token_ids",
]

_REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference"

BOS, EOT, EOS = "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>"
SPECIALS = (
    BOS,
    EOS,
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    EOT,
    "<|python_tag|>",
    *(f"<|reserved_special_token_{i}|>" for i in range(3, 8)),
)
NUMBERS = tuple(str(n) for n in range(1, 15))
SINGLE_TOKENS = ("safe", "unsafe", "\n\n", "\n", "S", ",S", *NUMBERS)
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# reserved residual dims of the rigged model (see the module docstring)
D_CONST, D_MODE_S, D_MODE_NUM, D_SIG, D_POOL = 0, 1, 2, (3, 4), (5, 6)
N_RESERVED = 7


@dataclass(frozen=True)
class RigParams:
    """Targets of the rig; the lm_head gains are derived from them at build time."""

    const: float = 16.0  # embedding value of the constant dim
    mode: float = 4.0  # embedding value of a mode indicator
    verdict_logit: float = 23.0  # safe/unsafe logit level
    category_logit: float = 12.0  # "S", numbers, ",S" logit level
    mode_swing: float = 14.0  # logit shift towards the mode's tokens
    diff_std: float = 1.7  # std of logit(unsafe) - logit(safe) across conversations
    category_std: float = 1.2  # std of the per-number offsets across conversations
    rest_logit_std: float = 1.0  # std of the logits of the other 128k tokens
    pool_gain: float = 3.0  # o_proj gain of the uniform-attention head
    attn_sharpness: float = 0.35  # std of q/k weights (sharp, position-dependent attention)
    calibration_samples: int = 32
    calibration_conversation: int = 12


RIG = RigParams()


@dataclass(frozen=True)
class FamilyRig:
    """What a family's test model needs: its reference chat template, special tokens for the
    configs, and the tokens the rig favours. Token strings are text encoded as one token, or,
    with ``pieces``, vocabulary pieces looked up by name (SentencePiece: ``▁safe``, ``<0x0A>``)."""

    template: str | None  # file in shared/reference/chat-templates
    bos: str
    eos: str
    safe: str
    unsafe: str
    lead: str | None  # token forced before the verdict (None: the prompt's last token)
    newline: str  # line-2 mode: after it the code prefix dominates
    code: str | None = None  # category code prefix ("S", "O"); None: no category rig
    code_sep: str | None = None  # ",S"
    numbers: tuple[str, ...] = ()
    pieces: bool = False
    lead_gated: bool = False  # verdict tokens dominate only right after ``lead``
    specials: tuple[str, ...] = ()  # for the built-in trained tokenizer


GRANITE_SPECIALS = (
    "<|end_of_text|>",
    "<fim_prefix>",
    "<fim_middle>",
    "<fim_suffix>",
    "<fim_pad>",
    "<filename>",
    "<gh_stars>",
    "<issue_start>",
    "<issue_comment>",
    "<issue_closed>",
    "<jupyter_start>",
    "<jupyter_text>",
    "<jupyter_code>",
    "<jupyter_output>",
    "<empty_output>",
    "<commit_before>",
    "<commit_msg>",
    "<commit_after>",
    "<reponame>",
    "<|start_of_role|>",
    "<|end_of_role|>",
    "<|tool_call|>",
)


def _lg3_rig(template: str) -> FamilyRig:
    return FamilyRig(
        template, bos=BOS, eos=EOT, safe="safe", unsafe="unsafe", lead="\n\n", newline="\n",
        code="S", code_sep=",S", numbers=NUMBERS, specials=SPECIALS,
    )  # fmt: skip


FAMILY_RIGS: dict[str, FamilyRig] = {
    "llama-guard-3-1b": _lg3_rig("llama-guard-3-1b.chat_template.jinja"),
    "llama-guard-3-8b": _lg3_rig("llama-guard-3-8b.chat_template.jinja"),
    "llama-guard-1": FamilyRig(
        "llamaguard-7b.chat_template.jinja", bos="<s>", eos="</s>", safe="▁safe",
        unsafe="▁unsafe", lead=None, newline="<0x0A>", code="O", numbers=NUMBERS[:9],
        pieces=True,
    ),
    "llama-guard-2": FamilyRig(
        "meta-llama-guard-2-8b.chat_template.jinja", bos=BOS, eos=EOS, safe=" safe",
        unsafe=" unsafe", lead=None, newline="\n", code="S", code_sep=",S", numbers=NUMBERS,
    ),
    "llama-guard-4": FamilyRig(
        "llama-guard-4-12b.tpu-inference-variant.jinja", bos=BOS, eos="<|eot|>", safe="safe",
        unsafe="unsafe", lead="\n\n", newline="\n", code="S", code_sep=",S", numbers=NUMBERS,
        lead_gated=True,
    ),
    "granite-guardian-3": FamilyRig(
        "granite-guardian-3.0-2b.chat_template.jinja", bos="<|end_of_text|>",
        eos="<|end_of_text|>", safe="No", unsafe="Yes", lead=None, newline="\n",
        specials=GRANITE_SPECIALS,
    ),
}  # fmt: skip


def default_tokenizer_dir() -> Path | None:
    """The real Llama 3 tokenizer in ``../shared/reference`` when present."""
    path = _REFERENCE / "tokenizers" / "llama3"
    return path if (path / "tokenizer.json").is_file() else None


def make_test_model(
    out_dir: str | Path,
    *,
    tokenizer_dir: str | Path | None = None,
    seed: int = 0,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    rigged: bool = True,
    variant: str = "1b",
    rig: RigParams = RIG,
    family: str | None = None,
) -> Path:
    """Write a tiny guard model directory to ``out_dir`` and return its path. ``family``
    (default ``llama-guard-3-{variant}``) is a key of ``FAMILY_RIGS``."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    family = family or f"llama-guard-3-{variant}"
    if family not in FAMILY_RIGS:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILY_RIGS)}")
    spec = FAMILY_RIGS[family]
    if tokenizer_dir is not None:
        tok_dir: Path | None = Path(tokenizer_dir)
    elif family.startswith("llama-guard-3"):
        tok_dir = default_tokenizer_dir()
    elif spec.pieces or family.startswith("llama-guard"):
        raise ValueError(f"family {family!r} needs its real tokenizer: pass tokenizer_dir")
    else:
        tok_dir = None
    tok = (
        _load_or_train_tokenizer(tok_dir)
        if tok_dir is not None or spec.specials == SPECIALS
        else train_tokenizer(
            specials=spec.specials, bos=spec.bos, required=(spec.safe, spec.unsafe)
        )
    )
    ids = _rig_ids(tok, spec)
    template_path = _REFERENCE / "chat-templates" / str(spec.template)
    template = template_path.read_text() if template_path.is_file() else None
    bos, eot = tok.token_to_id(spec.bos), tok.token_to_id(spec.eos)

    cfg = LlamaConfig(
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
        hidden_size=hidden_size,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        tie_word_embeddings=False,
        bos_token_id=bos,
        eos_token_id=eot,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model: Any = LlamaForCausalLM(cfg)
    model.eval()
    if rigged:
        # other families: control tokens and all template text (e.g. every Granite risk
        # definition, not only the rendered default) carry no signal (LG3 keeps its old list)
        extra: frozenset[int] = frozenset()
        if spec.specials != SPECIALS:
            raw = tok.encode(template, add_special_tokens=False).ids if template else []
            extra = frozenset(tok.get_added_tokens_decoder()) | frozenset(raw)
        _rig(model, tok, ids, template, seed, rig, lead_gated=spec.lead_gated, silent_extra=extra)
    _save_quietly(model, out)
    generation: Any = GenerationConfig
    generation(bos_token_id=bos, eos_token_id=eot).save_pretrained(out)
    _write_tokenizer(out, tok, tok_dir, template, bos=spec.bos, eos=spec.eos)
    return out


def rigged_token_ids(tok: Tokenizer) -> dict[str, int]:
    """Ids of the single-token strings the rig and the adapter rely on; raises if one splits."""
    out = {}
    for text in SINGLE_TOKENS:
        enc = tok.encode(text, add_special_tokens=False).ids
        if len(enc) != 1:
            raise ValueError(f"{text!r} is not a single token in this tokenizer: {enc}")
        out[text] = enc[0]
    return out


def _rig_ids(tok: Tokenizer, spec: FamilyRig) -> dict[str, int]:
    """The rig's token ids under the LG3 names ("\\n\\n" = the lead, "S" = the code prefix)."""

    def one(text: str) -> int:
        if spec.pieces:
            got = tok.token_to_id(text)
            if got is None:
                raise ValueError(f"no vocabulary piece {text!r} in this tokenizer")
            return int(got)
        enc = tok.encode(text, add_special_tokens=False).ids
        if len(enc) != 1:
            raise ValueError(f"{text!r} is not a single token in this tokenizer: {enc}")
        return int(enc[0])

    names = {"safe": spec.safe, "unsafe": spec.unsafe, "\n": spec.newline}
    names.update({"\n\n": spec.lead, "S": spec.code, ",S": spec.code_sep})  # type: ignore[dict-item]
    names.update({n: n for n in spec.numbers})
    return {key: one(text) for key, text in names.items() if text is not None}


# -- the rig -----------------------------------------------------------------------------------


def _rig(
    model: Any,
    tok: Tokenizer,
    ids: dict[str, int],
    template: str | None,
    seed: int,
    rig: RigParams,
    *,
    lead_gated: bool = False,
    silent_extra: frozenset[int] = frozenset(),
) -> None:
    import torch

    cfg = model.config
    h, vocab, hd = cfg.hidden_size, cfg.vocab_size, cfg.head_dim
    if h < N_RESERVED + 8 or hd < len(D_SIG):
        raise ValueError(f"hidden_size must be >= {N_RESERVED + 8} for the rig")
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    reserved = list(range(N_RESERVED))
    rest = list(range(N_RESERVED, h))
    specials = (tok.token_to_id(s) for s in SPECIALS)
    silent = _template_token_ids(tok, template) | {i for i in specials if i is not None}
    silent |= silent_extra
    code_ids = [ids[k] for k in ("S", ",S") if k in ids]
    numbers = [ids[n] for n in NUMBERS if n in ids]
    sig_mask = torch.ones(vocab)
    sig_mask[sorted(silent)] = 0.0

    with torch.no_grad():
        emb = torch.zeros(vocab, h)
        emb[:, rest] = randn(vocab, len(rest), std=1.0)
        emb[:, D_CONST] = rig.const
        emb[ids["\n"], D_MODE_S] = rig.mode
        if code_ids:
            emb[code_ids, D_MODE_NUM] = rig.mode
        if lead_gated:  # the lead is an anti-newline: it lifts the verdict tokens
            emb[ids["\n\n"], D_MODE_S] = -rig.mode
        emb[:, list(D_SIG)] = randn(vocab, len(D_SIG), std=1.0) * sig_mask[:, None]
        model.model.embed_tokens.weight.copy_(emb)

        norm_w = torch.full((h,), 2.0)  # > 1: undo the shrink from the big constant dim
        norm_w[[D_CONST, D_MODE_S, D_MODE_NUM, *D_POOL]] = 0.0
        inner = cfg.num_attention_heads * hd
        for n, layer in enumerate(model.model.layers):
            att, mlp = layer.self_attn, layer.mlp
            layer.input_layernorm.weight.copy_(norm_w)
            layer.post_attention_layernorm.weight.copy_(norm_w)
            att.q_proj.weight.copy_(randn(*att.q_proj.weight.shape, std=rig.attn_sharpness))
            att.k_proj.weight.copy_(randn(*att.k_proj.weight.shape, std=rig.attn_sharpness))
            att.v_proj.weight.copy_(randn(*att.v_proj.weight.shape, std=h**-0.5))
            att.o_proj.weight.copy_(randn(h, inner, std=inner**-0.5))
            mlp.gate_proj.weight.copy_(randn(*mlp.gate_proj.weight.shape, std=h**-0.5))
            mlp.up_proj.weight.copy_(randn(*mlp.up_proj.weight.shape, std=h**-0.5))
            mlp.down_proj.weight.copy_(randn(h, cfg.intermediate_size, std=0.5 / math.sqrt(h)))
            att.o_proj.weight[reserved] = 0.0
            mlp.down_proj.weight[reserved] = 0.0
            if n == 0:  # head 0: zero query -> uniform causal attention -> running mean
                att.q_proj.weight[:hd] = 0.0
                att.v_proj.weight[: len(D_SIG)] = 0.0
                att.o_proj.weight[:, : len(D_SIG)] = 0.0
                for i, (src, dst) in enumerate(zip(D_SIG, D_POOL, strict=True)):
                    att.v_proj.weight[i, src] = 1.0
                    att.o_proj.weight[dst, i] = rig.pool_gain
        model.model.norm.weight.fill_(1.0)

        stats = _calibrate(model, tok, ids, template, sig_mask, rig, seed)
        head = torch.zeros(vocab, h)
        head[:, rest] = randn(vocab, len(rest), std=rig.rest_logit_std / stats["rest_norm"])
        h0 = stats["const"]
        verdict = [ids["safe"], ids["unsafe"]]
        head[ids["unsafe"], rest] = head[ids["safe"], rest]  # no constant safe/unsafe bias
        # lead-gated: below the category tokens except right after the lead (+ mode_swing)
        verdict_logit = rig.category_logit - 4.0 if lead_gated else rig.verdict_logit
        head[verdict, D_CONST] = verdict_logit / h0
        head[[*code_ids, *numbers], D_CONST] = rig.category_logit / h0
        head[verdict, D_MODE_S] = -rig.mode_swing / stats["mode_s"]
        if "S" in ids:
            head[ids["S"], D_MODE_S] = rig.mode_swing / stats["mode_s"]
        if numbers:
            head[verdict, D_MODE_NUM] = -rig.mode_swing / stats["mode_num"]
            head[numbers, D_MODE_NUM] = rig.mode_swing / stats["mode_num"]
        diff = rig.diff_std / stats["pool_std"][0]
        head[ids["unsafe"], D_POOL[0]] = diff / 2
        head[ids["safe"], D_POOL[0]] = -diff / 2
        if numbers:
            head[numbers, D_POOL[1]] = randn(
                len(numbers), std=rig.category_std / stats["pool_std"][1]
            )
        model.lm_head.weight.copy_(head)


def _calibrate(
    model: Any,
    tok: Tokenizer,
    ids: dict[str, int],
    template: str | None,
    sig_mask: torch.Tensor,
    rig: RigParams,
    seed: int,
) -> dict[str, Any]:
    """Measure the final hidden state on template-like prompts to set the lm_head gains."""
    import torch

    rng = random.Random(seed)
    fixed = _render_template_ids(tok, template)
    signal_ids = torch.nonzero(sig_mask).flatten().tolist()
    if not fixed:
        fixed = [rng.choice(signal_ids) for _ in range(250)]
    cut = max(1, len(fixed) - 55)
    n_conv = rig.calibration_conversation

    def prompt(last: int | None) -> list[int]:
        conv = [rng.choice(signal_ids) for _ in range(n_conv)]
        return [*fixed[:cut], *conv, *fixed[cut:], *([] if last is None else [last])]

    def final_hidden(last: int | None, samples: int) -> torch.Tensor:
        batch = torch.tensor([prompt(last) for _ in range(samples)])
        with torch.no_grad():
            hidden: torch.Tensor = model.model(input_ids=batch).last_hidden_state[:, -1]
        return hidden

    verdict = final_hidden(ids.get("\n\n"), rig.calibration_samples)
    mode_s = final_hidden(ids["\n"], 4)
    mode_num = final_hidden(ids["S"], 4) if "S" in ids else mode_s
    return {
        "const": float(verdict[:, D_CONST].mean()),
        "mode_s": float(mode_s[:, D_MODE_S].mean()),
        "mode_num": float(mode_num[:, D_MODE_NUM].mean()),
        "pool_std": [float(verdict[:, d].std()) for d in D_POOL],
        "rest_norm": float(verdict[:, N_RESERVED:].norm(dim=-1).mean()),
    }


def _render_template_ids(tok: Tokenizer, template: str | None) -> list[int]:
    """Token ids of the template rendered for one empty user turn (no conversation text)."""
    texts = _render_template(template, turns=1)
    return tok.encode(texts[0], add_special_tokens=False).ids if texts else []


def _template_token_ids(tok: Tokenizer, template: str | None) -> set[int]:
    """Every token id of the fixed template text (1- and 2-turn renders)."""
    texts = _render_template(template, turns=1) + _render_template(template, turns=2)
    if not texts:  # no jinja2: the raw template text is a close superset
        texts = [template]
    return {i for text in texts for i in tok.encode(text, add_special_tokens=False).ids}


@functools.cache
def _own_lg3_renders(turns: int) -> list[str]:
    """Without the reference template file (e.g. inside the container), our own Llama Guard 3
    renderer -- byte-identical to the official template, tested -- gives the same fixed text.
    Its structure does not depend on the tokenizer, so the Llama 3 special tokens suffice."""
    from guardwire_server.adapters.llama_guard import LlamaGuard3Adapter
    from guardwire_server.adapters.tokenization import Tokenizer as GuardTokenizer
    from guardwire_server.domain import Conversation, Role, Turn

    adapter = LlamaGuard3Adapter(GuardTokenizer(train_tokenizer()), "1b")
    convo = tuple(Turn(Role.USER if i % 2 == 0 else Role.ASSISTANT, "x") for i in range(turns))
    return [adapter.render(Conversation(convo), adapter.default_policy).full]  # type: ignore[return-value]


def _render_template(template: str | None, *, turns: int) -> list[str]:
    if not template:
        return _own_lg3_renders(turns)
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        return []

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    tpl = env.from_string(template)
    roles = ["user", "assistant"][:turns]
    for parts in (True, False):  # LG3-1B iterates content parts, LG3-8B calls .strip()
        content: Any = [{"type": "text", "text": ""}] if parts else ""
        messages = [{"role": r, "content": content} for r in roles]
        try:
            return [
                tpl.render(messages=messages, excluded_category_keys=[], add_generation_prompt=True)
            ]
        except Exception:
            continue
    return []


# -- tokenizer ---------------------------------------------------------------------------------


def _load_or_train_tokenizer(tok_dir: Path | None) -> Tokenizer:
    from tokenizers import Tokenizer

    if tok_dir is not None:
        path = tok_dir / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {tok_dir}")
        return Tokenizer.from_file(str(path))
    return train_tokenizer()


def train_tokenizer(
    vocab_size: int = 4096,
    *,
    specials: tuple[str, ...] = SPECIALS,
    bos: str = BOS,
    required: tuple[str, ...] | None = None,
) -> Tokenizer:
    """A small byte-level BPE with the Llama 3 pre-tokenizer and special tokens (no downloads).

    ``specials``/``bos``: another family's control tokens; ``required``: strings that must be
    single tokens (default: the Llama Guard 3 rig's), added to the training text."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(specials),
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    extra = [f"{word} {word}\n{word}." for word in required or () for _ in range(50)]
    tok.train_from_iterator(_corpus() + extra, trainer=trainer)
    tok.add_special_tokens(list(specials))
    bos_id = tok.token_to_id(bos)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
    )
    if required is None:
        rigged_token_ids(tok)  # raises if a required string is not a single token
    for text in required or ():
        if len(tok.encode(text, add_special_tokens=False).ids) != 1:
            raise ValueError(f"{text!r} is not a single token in the trained tokenizer")
    return tok


_CATEGORY_NAMES = (
    "Violent Crimes. Non-Violent Crimes. Sex Crimes. Child Exploitation. Defamation. "
    "Specialized Advice. Privacy. Intellectual Property. Indiscriminate Weapons. Hate. "
    "Self-Harm. Sexual Content. Elections. Code Interpreter Abuse."
)
_TEXT = (
    "The user asks the agent a question about the weather, a recipe for bread, how to fix a "
    "bicycle, where to travel in summer, what a function returns, and why the sky is blue. "
    "The agent answers politely with a short and helpful message. Please check the message "
    "in the conversation and provide your assessment of the content. First line must read "
    "one word; if the content is not allowed, a second line lists the categories."
)


def _corpus() -> list[str]:
    """Deterministic training text: English, category names, verdict lines, pseudo-words."""
    rng = random.Random(1234)
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(6000)]
    lines = [_TEXT, _CATEGORY_NAMES] * 20
    for n in range(400):
        codes = ",".join(f"S{rng.randint(1, 14)}" for _ in range(rng.randint(1, 3)))
        lines.append(f"User: {' '.join(rng.sample(words, 12))}\n\nsafe\n\nunsafe\n{codes}")
        lines.append(f"S{n % 14 + 1}: {' '.join(rng.sample(words, 6))}.\n")
    lines.append(" ".join(words))
    return lines


def _write_tokenizer(
    out: Path,
    tok: Tokenizer,
    tok_dir: Path | None,
    template: str | None,
    *,
    bos: str = BOS,
    eos: str = EOT,
) -> None:
    if tok_dir is not None:
        shutil.copyfile(tok_dir / "tokenizer.json", out / "tokenizer.json")
    else:
        tok.save(str(out / "tokenizer.json"))
    config: dict[str, Any] = {
        "bos_token": bos,
        "eos_token": eos,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    if template is not None:
        config["chat_template"] = template
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special = {"bos_token": bos, "eos_token": eos}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def _save_quietly(model: Any, out: Path) -> None:
    from transformers.utils import logging

    hf_logging: Any = logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(out)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
