"""Model family -> adapter, from an explicit setting or the model directory's metadata.

The chat template shipped with the model is the most reliable evidence of its prompt format, so
it decides; the model name is a weaker hint; the config's shape alone never decides (random-weight
test models are tiny, and guards share their shapes with other Llama models). The tokenizer's
control tokens break ties when there is no template (Llama 4's ``<|header_start|>``, Granite's
``<|start_of_role|>``). An explicit family (``--family``) always wins.

Families: ``llama-guard-1``, ``llama-guard-2``, ``llama-guard-3-1b``, ``llama-guard-3-8b``,
``llama-guard-4``, ``granite-guardian-3``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from guardwire_server.adapters.base import GuardAdapter
from guardwire_server.adapters.granite_guardian import GraniteGuardianAdapter
from guardwire_server.adapters.llama_guard import LlamaGuard3Adapter
from guardwire_server.adapters.llama_guard_v1 import LlamaGuard1Adapter
from guardwire_server.adapters.llama_guard_v2 import LlamaGuard2Adapter
from guardwire_server.adapters.llama_guard_v4 import LlamaGuard4Adapter
from guardwire_server.adapters.tokenization import Tokenizer

__all__ = ["KNOWN_FAMILIES", "detect_family", "load_adapter"]

log = logging.getLogger(__name__)

_DEFAULT_FAMILY = "llama-guard-3-1b"

# family -> (tokenizer, category_threshold) -> adapter
_LOADERS: dict[str, Callable[[Tokenizer, float], GuardAdapter]] = {
    "llama-guard-1": lambda tok, ct: LlamaGuard1Adapter(tok, category_threshold=ct),
    "llama-guard-2": lambda tok, ct: LlamaGuard2Adapter(tok, category_threshold=ct),
    "llama-guard-3-1b": lambda tok, ct: LlamaGuard3Adapter(tok, "1b", category_threshold=ct),
    "llama-guard-3-8b": lambda tok, ct: LlamaGuard3Adapter(tok, "8b", category_threshold=ct),
    "llama-guard-4": lambda tok, ct: LlamaGuard4Adapter(tok, category_threshold=ct),
    "granite-guardian-3": lambda tok, ct: GraniteGuardianAdapter(tok),
}
KNOWN_FAMILIES: tuple[str, ...] = tuple(_LOADERS)

# (pattern, family or a function of the match), tried in order on names and paths
_NAME_HINTS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (re.compile(r"llama[-_ ]?guard[-_ ]?3[-_ ]?(1|8)b", re.I), lambda m: f"llama-guard-3-{m[1]}b"),
    (re.compile(r"llama[-_ ]?guard[-_ ]?4", re.I), lambda m: "llama-guard-4"),
    (re.compile(r"llama[-_ ]?guard[-_ ]?2", re.I), lambda m: "llama-guard-2"),
    (re.compile(r"llama[-_ ]?guard[-_ ]?7b", re.I), lambda m: "llama-guard-1"),
    (re.compile(r"granite[-_ ]?guardian[-_ ]?3\.[01]", re.I), lambda m: "granite-guardian-3"),
)


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
    """Classify one template text (None: not a guard template we know)."""
    if "UNSAFE CONTENT CATEGORIES" in template:
        if "<|header_start|>" in template:
            return "llama-guard-4"
        if "[INST] Task: Check if there is unsafe content" in template:
            return "llama-guard-1" if "O1: " in template else "llama-guard-2"
        if "excluded_category_keys" in template and "<|start_header_id|>" in template:
            return "llama-guard-3-1b"
        if " <|begin_of_text|>" in template and "S14" in template:
            return "llama-guard-3-8b"
    if "risk_bank" in template and "<|start_of_role|>" in template:
        if "<confidence>" in template or re.search(r"\bthink\b", template):
            raise ValueError(
                "the model looks like Granite Guardian 3.2 or later, whose answer format "
                "(confidence/think tags) is not supported; Granite Guardian 3.0/3.1 are"
            )
        return "granite-guardian-3"
    return None


def _family_from_name(hints: list[str]) -> str | None:
    for hint in hints:
        for pattern, family in _NAME_HINTS:
            m = pattern.search(hint)
            if m:
                return family(m)
    return None


def _family_from_tokens(model_dir: Path) -> str | None:
    """The tokenizer's control tokens: Llama 4 or Granite role tokens (names win over this)."""
    tokenizer = _read_json(model_dir / "tokenizer.json")
    added = {t.get("content") for t in tokenizer.get("added_tokens", []) if isinstance(t, dict)}
    if "<|header_start|>" in added:
        return "llama-guard-4"
    if "<|start_of_role|>" in added:
        return "granite-guardian-3"
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
    hints = [str(config.get("_name_or_path", "")), path.resolve().name]
    family = _family_from_name(hints) or _family_from_tokens(path)
    if family is not None:
        return family
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
    conditional probability from which a category is reported as violated besides the top one
    (Llama Guard; Granite Guardian scores each category on its own)."""
    if family is None:
        family = detect_family(model_dir)
        log.info("detected guard family %s from %s", family, model_dir)
    loader = _LOADERS.get(family)
    if loader is None:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(KNOWN_FAMILIES)}")
    tokenizer = Tokenizer.from_dir(tokenizer_dir if tokenizer_dir is not None else model_dir)
    return loader(tokenizer, category_threshold)
