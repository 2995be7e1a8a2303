"""Real tokenizers of every Llama Guard generation, as ``tokenizer.json`` files built at test time.

``../shared/reference/tokenizers`` has Meta's original files only: Llama 2's SentencePiece
``tokenizer.model`` and Llama 4's tiktoken ranks. The tests convert them with transformers'
converters into a temporary directory (never into the repository):

* Llama 2: ``LlamaTokenizer.from_pretrained`` on a directory holding the ``tokenizer.model``
  (transformers >= 5 builds the ``tokenizers`` BPE from it; needs ``sentencepiece``).
* Llama 4: ``TikTokenConverter`` with Meta's ``O200K_PATTERN`` and special-token list from
  ``meta-llama/llama-models`` ``models/llama4/tokenizer.py`` (2048 reserved slots). The ranks
  file is read here, so ``tiktoken`` itself is not needed (the parity tests use it when present).
* Llama 3: the reference already has a converted ``tokenizer.json``.

Each ``*_dir(out)`` writes ``out/tokenizer.json`` and returns ``out``; a conversion already in
``out`` from the same source file is reused (``cached_dir`` gives a directory in pytest's cache,
so the ~10 s Llama 4 conversion runs once, not per session). ``FileNotFoundError`` when the
reference file is absent.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = (REPO / ".." / "shared" / "reference").resolve()
TOKENIZERS = REFERENCE / "tokenizers"
TEMPLATES = REFERENCE / "chat-templates"

# meta-llama/llama-models models/llama4/tokenizer.py (Tokenizer.O200K_PATTERN)
LLAMA4_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _reserved(name: str, count: int, start: int = 0) -> list[str]:
    return [f"<|{name}_reserved_special_token_{i}|>" for i in range(start, start + count)]


def llama4_special_tokens() -> list[str]:
    """The 2048 special tokens of Llama 4 in id order (ids 200000..202047)."""
    basic = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
    ]
    text_post_train = [
        "<|header_start|>",
        "<|header_end|>",
        "<|eom|>",
        "<|eot|>",
        "<|step|>",
        *_reserved("text_post_train", 6),
        "<|python_start|>",
        "<|python_end|>",
        "<|finetune_right_pad|>",
        *_reserved("text_post_train", 61, 8),
    ]
    vision = [
        "<|image_start|>",
        "<|image_end|>",
        *_reserved("vision", 2),
        "<|tile_x_separator|>",
        "<|tile_y_separator|>",
        *_reserved("vision", 4, 2),
        "<|image|>",
        *_reserved("vision", 1, 6),
        "<|patch|>",
        *_reserved("vision", 1041, 7),
    ]
    reasoning = [
        *_reserved("reasoning", 8),
        "<|reasoning_thinking_start|>",
        "<|reasoning_thinking_end|>",
    ]
    specials = basic + text_post_train + vision + reasoning
    return specials + [f"<|reserved_special_token_{i}|>" for i in range(2048 - len(specials))]


def load_tiktoken_ranks(path: str | Path) -> dict[bytes, int]:
    """A tiktoken ranks file: one ``base64(token) rank`` per line."""
    ranks: dict[bytes, int] = {}
    for line in Path(path).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _need(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"reference file {path} is absent")
    return path


def cached_dir(request: pytest.FixtureRequest, name: str) -> Path:
    """A directory that survives test sessions (pytest's cache), or a fresh temporary one when
    the cache plugin is disabled."""
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir(name))
    factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    return factory.mktemp(name)


def _fresh(out: Path, source: Path) -> bool:
    """Whether ``out`` holds a conversion of ``source``'s exact bytes (stamp file)."""
    stamp = hashlib.sha256(source.read_bytes()).hexdigest()
    marker = out / "source.sha256"
    if (out / "tokenizer.json").is_file() and marker.is_file():
        if marker.read_text().strip() == stamp:
            return True
    marker.parent.mkdir(parents=True, exist_ok=True)
    return False


def _stamp(out: Path, source: Path) -> None:
    (out / "source.sha256").write_text(hashlib.sha256(source.read_bytes()).hexdigest() + "\n")


def llama2_dir(out: Path) -> Path:
    """Llama 2 (Llama Guard 1): ``tokenizer.json`` converted from the SentencePiece model."""
    model = _need(TOKENIZERS / "llama2" / "tokenizer.model")
    if _fresh(out, model):
        return out
    from transformers import LlamaTokenizer

    src = out / "spm"
    src.mkdir(parents=True, exist_ok=True)
    link = src / "tokenizer.model"
    if not link.exists():
        link.symlink_to(model)
    hf: Any = LlamaTokenizer.from_pretrained(str(src))
    hf.backend_tokenizer.save(str(out / "tokenizer.json"))
    _stamp(out, model)
    return out


def llama3_dir() -> Path:
    """Llama 3 (Llama Guard 2 and 3): the reference's converted ``tokenizer.json``."""
    return _need(TOKENIZERS / "llama3" / "tokenizer.json").parent


def llama4_dir(out: Path) -> Path:
    """Llama 4 (Llama Guard 4): ``tokenizer.json`` converted from the tiktoken ranks."""
    ranks_file = _need(TOKENIZERS / "llama4" / "tokenizer.model")
    if _fresh(out, ranks_file):
        return out
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _Converter(TikTokenConverter):  # type: ignore[misc]
        @staticmethod
        def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
            return load_tiktoken_ranks(tiktoken_url)

    converter = _Converter(
        vocab_file=str(ranks_file),
        pattern=LLAMA4_PATTERN,
        extra_special_tokens=llama4_special_tokens(),
    )
    converter.converted().save(str(out / "tokenizer.json"))
    _stamp(out, ranks_file)
    return out


def tiktoken_llama4() -> Any:
    """Meta's reference Llama 4 encoder (``tiktoken``), or None when tiktoken is absent."""
    try:
        import tiktoken
    except ImportError:
        return None
    ranks = load_tiktoken_ranks(_need(TOKENIZERS / "llama4" / "tokenizer.model"))
    specials = {t: len(ranks) + i for i, t in enumerate(llama4_special_tokens())}
    return tiktoken.Encoding(
        name="llama4", pat_str=LLAMA4_PATTERN, mergeable_ranks=ranks, special_tokens=specials
    )


def sentencepiece_llama2() -> Any:
    """Meta's reference Llama 2 encoder (``sentencepiece``), or None when it is absent."""
    try:
        import sentencepiece
    except ImportError:
        return None
    model = _need(TOKENIZERS / "llama2" / "tokenizer.model")
    return sentencepiece.SentencePieceProcessor(model_file=str(model))
