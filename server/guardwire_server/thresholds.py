"""Per-category thresholds: the policy the server applies and the file it reads.

The rule (``rule: top-category``) and the file format are documented in
:mod:`guardwire_tools.evaluation.calibrate`, which fits and writes these files; the serving path
only reads them, so this module is all of it the server imports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "KIND",
    "MIN_THRESHOLD",
    "RULE",
    "VERSION",
    "ThresholdFileError",
    "ThresholdPolicy",
    "load_thresholds",
    "top_category",
]

KIND = "guardwire/thresholds"
VERSION = 1
RULE = "top-category"
MIN_THRESHOLD = 1e-6  # the server accepts thresholds in (0, 1]
_CODE_RE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")


class ThresholdFileError(ValueError):
    """A thresholds file is malformed; the message names the file and the key."""


def top_category(category_scores: Mapping[str, float]) -> str | None:
    """The code with the highest score; ties go to the code that sorts first. None if empty."""
    if not category_scores:
        return None
    return min(category_scores.items(), key=lambda kv: (-kv[1], kv[0]))[0]


@dataclass(frozen=True, slots=True)
class ThresholdPolicy:
    """Thresholds keyed by category code plus ``"default"``; see the module docstring."""

    thresholds: Mapping[str, float]
    rule: str = RULE
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def threshold_for(self, category_scores: Mapping[str, float]) -> tuple[str | None, float]:
        top = top_category(category_scores)
        if top is not None and top in self.thresholds:
            return top, float(self.thresholds[top])
        return top, float(self.thresholds["default"])

    def decide(
        self, unsafe_score: float, category_scores: Mapping[str, float]
    ) -> tuple[bool, str | None, float]:
        """``(unsafe, top_category, threshold_applied)`` for one classification."""
        top, t = self.threshold_for(category_scores)
        return unsafe_score >= t, top, t


def load_thresholds(path: str | Path) -> ThresholdPolicy:
    """Reads and validates a thresholds file; errors name the file and the key."""
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ThresholdFileError(f"{p} does not exist") from None
    except yaml.YAMLError as exc:
        raise ThresholdFileError(f"{p} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ThresholdFileError(f"{p}: top level must be a mapping")
    unknown = sorted(set(doc) - {"kind", "version", "rule", "thresholds", "metadata"})
    if unknown:
        raise ThresholdFileError(f"{p}: unknown key(s) {unknown}")
    if doc.get("kind", KIND) != KIND:
        raise ThresholdFileError(f"{p}: kind must be {KIND!r}, got {doc.get('kind')!r}")
    if doc.get("version", VERSION) != VERSION:
        raise ThresholdFileError(f"{p}: unsupported version {doc.get('version')!r}")
    rule = doc.get("rule", RULE)
    if rule != RULE:
        raise ThresholdFileError(f"{p}: rule must be {RULE!r}, got {rule!r}")
    raw = doc.get("thresholds")
    if not isinstance(raw, dict) or "default" not in raw:
        raise ThresholdFileError(f"{p}: 'thresholds' must be a mapping with a 'default' entry")
    out: dict[str, float] = {}
    for code, value in raw.items():
        key = str(code)
        if key != "default" and not _CODE_RE.match(key):
            raise ThresholdFileError(f"{p}: thresholds.{key}: not a category code")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ThresholdFileError(f"{p}: thresholds.{key}: expected a number, got {value!r}")
        if not 0.0 < float(value) <= 1.0:
            raise ThresholdFileError(f"{p}: thresholds.{key}: must be in (0, 1], got {value}")
        out[key] = float(value)
    meta = doc.get("metadata") or {}
    if not isinstance(meta, dict):
        raise ThresholdFileError(f"{p}: 'metadata' must be a mapping")
    return ThresholdPolicy(out, rule, meta)
