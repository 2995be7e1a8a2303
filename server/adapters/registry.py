"""Model family -> adapter, from an explicit setting or the model directory's metadata.

The chat template shipped with the model is the most reliable evidence of its prompt format, so
it decides; the model name is a weaker hint; the config's shape alone never decides (random-weight
test models are tiny, and the 1B and 8B guards share their shapes with other Llama models).
Families we recognise but do not support yet are refused rather than served with the wrong format.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.adapters.base import GuardAdapter
from server.adapters.llama_guard import LlamaGuard3Adapter
from server.adapters.tokenization import Tokenizer

__all__ = ["KNOWN_FAMILIES", "detect_family", "load_adapter"]

log = logging.getLogger(__name__)

_DEFAULT_FAMILY = "llama-guard-3-1b"

# family -> (tokenizer, category_threshold) -> adapter
_LOADERS: dict[str, Callable[[Tokenizer, float], GuardAdapter]] = {
    "llama-guard-3-1b": lambda tok, ct: LlamaGuard3Adapter(tok, "1b", category_threshold=ct),
    "llama-guard-3-8b": lambda tok, ct: LlamaGuard3Adapter(tok, "8b", category_threshold=ct),
}
KNOWN_FAMILIES: tuple[str, ...] = tuple(_LOADERS)

_NAME_RE = re.compile(r"llama[-_ ]?guard[-_ ]?3[-_ ]?(1|8)b", re.IGNORECASE)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _chat_templates(model_dir: Path) -> list[str]:
    """Every chat template text found: ``chat_template.jinja`` (transformers >= 4.43 saves it
    there), ``chat_template.json`` (processors), and ``tokenizer_config.json``'s field (a string
    or a list of ``{name, template}``)."""
    out: list[str] = []
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        out.append(jinja.read_text(encoding="utf-8"))
    for name in ("chat_template.json", "tokenizer_config.json"):
        value = _read_json(model_dir / name).get("chat_template")
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            out += [v["template"] for v in value if isinstance(v, dict) and "template" in v]
    return out


def _family_from_template(template: str) -> str | None:
    """Classify one template text; raises for a recognised but unsupported Llama Guard."""
    if "<|header_start|>" in template and "UNSAFE CONTENT CATEGORIES" in template:
        raise ValueError("the model looks like Llama Guard 4, which is not supported yet")
    if "[INST] Task: Check if there is unsafe content" in template:
        version = "1" if "O1: " in template else "2"
        raise ValueError(f"the model looks like Llama Guard {version}, which is not supported yet")
    if "excluded_category_keys" in template and "<|start_header_id|>" in template:
        return "llama-guard-3-1b"
    if " <|begin_of_text|>" in template and "S14" in template:
        return "llama-guard-3-8b"
    return None


def detect_family(model_dir: str | Path) -> str:
    """Guess the adapter family of a model directory (an explicit setting should win: pass it to
    ``load_adapter``). Falls back to ``llama-guard-3-1b`` with a warning when nothing matches."""
    path = Path(model_dir)
    for template in _chat_templates(path):
        family = _family_from_template(template)
        if family is not None:
            return family
    config = _read_json(path / "config.json")
    for hint in (str(config.get("_name_or_path", "")), path.resolve().name):
        m = _NAME_RE.search(hint)
        if m:
            return f"llama-guard-3-{m.group(1)}b"
    log.warning(
        "could not detect the guard model family of %s (no known chat template or name); "
        "assuming %s -- set the family explicitly if this is wrong",
        path,
        _DEFAULT_FAMILY,
    )
    return _DEFAULT_FAMILY


def load_adapter(
    model_dir: str | Path,
    family: str | None = None,
    tokenizer_dir: str | Path | None = None,
    *,
    category_threshold: float = 0.3,
) -> GuardAdapter:
    """Build the adapter for ``family`` (detected from ``model_dir`` when None), with the
    tokenizer from ``tokenizer_dir`` (default: ``model_dir``). ``category_threshold``: the
    conditional probability from which a category is reported as violated besides the top one."""
    if family is None:
        family = detect_family(model_dir)
    loader = _LOADERS.get(family)
    if loader is None:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(KNOWN_FAMILIES)}")
    tokenizer = Tokenizer.from_dir(tokenizer_dir if tokenizer_dir is not None else model_dir)
    return loader(tokenizer, category_threshold)
