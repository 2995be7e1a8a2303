"""Named model shapes and the random-weight model directories built for them.

``lg3-1b`` is Llama Guard 3 1B's shape (``shared/reference/llamaguard-facts.md``: hidden 2048,
intermediate 8192, 16 layers, 32 heads, 8 kv heads, vocab 128256, rope_theta 5e5, untied
lm_head); ``small`` is a quick proxy with the same vocabulary. Both are written by
``guardwire_tools.tiny_model.make_test_model`` as ordinary Hugging Face directories with the
Llama Guard 3 1B chat template and the real Llama 3 tokenizer from ``../shared`` when present
(else a small trained tokenizer, and so a smaller vocabulary: the report says which).

``small`` is *rigged* (its verdict tokens carry the probability mass, so the server's load
probe passes as with a real model); ``lg3-1b`` is plain random init -- the rig's calibration
would cost minutes of 1B forwards -- and the server is started with ``min_verdict_mass=0``.
Scoring cost does not depend on the weights' values.

Directories are cached under ``--model-cache`` by shape, seed and tokenizer; a directory is
complete once its ``bench-shape.json`` is written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["SHAPES", "Shape", "model_dir_for"]


@dataclass(frozen=True)
class Shape:
    name: str
    hidden_size: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    rigged: bool
    note: str

    @property
    def kwargs(self) -> dict[str, int]:
        return {
            "hidden_size": self.hidden_size,
            "layers": self.layers,
            "heads": self.heads,
            "kv_heads": self.kv_heads,
            "intermediate": self.intermediate,
        }


SHAPES: dict[str, Shape] = {
    "lg3-1b": Shape(
        "lg3-1b", 2048, 16, 32, 8, 8192, rigged=False,
        note="Llama Guard 3 1B shape (1.50 B params with the untied lm_head)",
    ),
    "small": Shape(
        "small", 256, 4, 4, 2, 1024, rigged=True,
        note="quick proxy (69.6 M params, 65.7 M of them the 128k embedding and lm_head)",
    ),
}  # fmt: skip


def _tokenizer_tag(tokenizer_dir: Path | None) -> str:
    if tokenizer_dir is None:
        return "builtin"
    digest = hashlib.sha256((tokenizer_dir / "tokenizer.json").read_bytes()).hexdigest()
    return digest[:12]


def model_dir_for(shape: Shape, cache: Path, *, seed: int = 0, rebuild: bool = False) -> Path:
    """The model directory of ``shape``, built on first use (this can take minutes and GBs:
    the 1B shape is written in float32, ~6 GB)."""
    from guardwire_tools.tiny_model import default_tokenizer_dir, make_test_model

    tok_dir = default_tokenizer_dir()
    tag = _tokenizer_tag(tok_dir)
    out = cache / f"{shape.name}-seed{seed}-tok{tag}"
    marker = out / "bench-shape.json"
    if marker.is_file() and not rebuild:
        return out
    if out.exists():
        shutil.rmtree(out)
    make_test_model(out, tokenizer_dir=tok_dir, seed=seed, rigged=shape.rigged, **shape.kwargs)
    meta = {**asdict(shape), "seed": seed, "tokenizer": str(tok_dir or "builtin trained")}
    marker.write_text(json.dumps(meta, indent=2) + "\n")
    return out
