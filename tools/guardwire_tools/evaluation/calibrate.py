"""Per-category thresholds for a target false-positive rate, and the thresholds file format.

The rule (``rule: top-category``)
    The model's *top category* for a request is the code with the highest category score (the
    category it would name first if it answered "unsafe"). The verdict is UNSAFE when
    ``unsafe_score >= thresholds[top]``, or ``thresholds["default"]`` when the top category has no
    entry (or no category scores are known). One score, one comparison, a threshold picked by what
    the model thinks the content is: a noisy category can be made stricter or looser without
    touching the others. :meth:`ThresholdPolicy.decide` is the reference implementation.

Calibration (``calibrate``)
    Labelled examples are routed by their top category. Each category with at least
    ``min_negatives`` safe examples gets the lowest threshold whose false-positive rate among *its*
    safe examples is at most the target (so recall is as high as the bound allows); the other
    examples are pooled under ``default``. Because every group's false positives are at most
    ``target × its negatives``, the overall false-positive rate on the calibration data is at most
    the target too. When the pool is too small, ``default`` is the larger of the pool's threshold
    and the single global threshold for the target. On new data the rate is an estimate:
    calibrate with ``--holdout`` to see it measured on examples the thresholds were not fit on.

File format (YAML)::

    kind: guardwire/thresholds
    version: 1
    rule: top-category
    thresholds:          # required: "default" plus any category codes, each in (0, 1]
      default: 0.62
      S1: 0.41
      S10: 0.77
    metadata: {...}      # free-form: model, policy, dataset, target FPR, achieved rates

Example::

    policy = calibrate(run.scored, target_fpr=0.05)
    write_thresholds(policy, "policy.yaml")
    unsafe, top, t = load_thresholds("policy.yaml").decide(0.7, {"S1": 0.6, "S10": 0.1})
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from guardwire_server.thresholds import (
    KIND,
    MIN_THRESHOLD,
    RULE,
    VERSION,
    ThresholdFileError,
    ThresholdPolicy,
    load_thresholds,
    top_category,
)
from guardwire_tools.evaluation import metrics
from guardwire_tools.evaluation.runner import ExampleResult

__all__ = [
    "RULE",
    "ThresholdFileError",
    "ThresholdPolicy",
    "calibrate",
    "evaluate_thresholds",
    "load_thresholds",
    "split_holdout",
    "write_thresholds",
]


def _clamp(t: float) -> float:
    return min(1.0, max(MIN_THRESHOLD, t))


def _usable(results: Sequence[ExampleResult]) -> list[ExampleResult]:
    return [r for r in results if r.ok and r.unsafe_score is not None]


def calibrate(
    results: Sequence[ExampleResult],
    target_fpr: float,
    *,
    min_negatives: int = 20,
) -> ThresholdPolicy:
    """Fits per-category thresholds (top-category rule) for ``target_fpr`` on scored results."""
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target FPR must be in (0, 1), got {target_fpr}")
    rows = _usable(results)
    if not any(not r.unsafe for r in rows):
        raise ValueError("calibration needs scored safe examples (negatives); none were found")
    y = np.asarray([r.unsafe for r in rows], dtype=bool)
    s = np.asarray([float(r.unsafe_score or 0.0) for r in rows], dtype=np.float64)
    tops = [top_category(r.category_scores) for r in rows]

    global_t, global_ok = metrics.threshold_for_fpr(y, s, target_fpr)
    thresholds: dict[str, float] = {}
    groups: dict[str, Any] = {}
    pooled = np.ones(len(rows), dtype=bool)
    for code in sorted({t for t in tops if t is not None}, key=_code_key):
        mask = np.asarray([t == code for t in tops])
        n_neg = int(np.sum(mask & ~y))
        if n_neg < min_negatives:
            continue
        t, ok = metrics.threshold_for_fpr(y[mask], s[mask], target_fpr)
        thresholds[code] = _clamp(t)
        pooled &= ~mask
        groups[code] = {"reachable": ok}
    n_pool_neg = int(np.sum(pooled & ~y))
    if n_pool_neg >= min_negatives:
        default, ok = metrics.threshold_for_fpr(y[pooled], s[pooled], target_fpr)
        how = "pooled examples of categories without their own threshold"
    elif n_pool_neg > 0:
        pool_t, ok = metrics.threshold_for_fpr(y[pooled], s[pooled], target_fpr)
        default = max(pool_t, global_t)
        ok = ok and global_ok
        how = f"max(global threshold, small pool of {n_pool_neg} negatives)"
    else:
        default, ok = global_t, global_ok
        how = "global threshold (no pooled negatives)"
    groups["default"] = {"reachable": ok, "how": how}
    policy = ThresholdPolicy({"default": _clamp(default), **thresholds})
    fit = evaluate_thresholds(rows, policy)
    for key, g in fit["groups"].items():
        groups.setdefault(key, {}).update(g)
    single = metrics.at_threshold(y, s, _clamp(global_t)).as_dict()
    meta = {
        "target_fpr": target_fpr,
        "min_negatives": min_negatives,
        "calibration": {
            "examples": len(rows),
            "negatives": int(np.sum(~y)),
            "positives": int(np.sum(y)),
            "per_category": fit["overall"],
            "single_threshold": single,
            "groups": groups,
        },
    }
    return ThresholdPolicy(policy.thresholds, RULE, meta)


def evaluate_thresholds(
    results: Sequence[ExampleResult], policy: ThresholdPolicy
) -> dict[str, Any]:
    """Applies ``policy`` to scored results: overall metrics and per routing group."""
    rows = _usable(results)
    y = np.asarray([r.unsafe for r in rows], dtype=bool)
    decisions = []
    keys = []
    for r in rows:
        unsafe, top, _ = policy.decide(float(r.unsafe_score or 0.0), r.category_scores)
        decisions.append(unsafe)
        keys.append(top if top in policy.thresholds else "default")
    p = np.asarray(decisions, dtype=bool)
    groups: dict[str, Any] = {}
    for key in policy.thresholds:
        mask = np.asarray([k == key for k in keys], dtype=bool)
        m = metrics.at_predictions(y[mask], p[mask], policy.thresholds[key])
        groups[key] = {
            "threshold": policy.thresholds[key],
            "examples": int(mask.sum()),
            "negatives": int(np.sum(mask & ~y)),
            "false_positives": m.fp,
            "fpr": m.fpr,
            "recall": m.recall,
        }
    overall = metrics.at_predictions(y, p, math.nan).as_dict()
    overall.pop("threshold")
    return {"overall": overall, "groups": groups}


def split_holdout(
    results: Sequence[ExampleResult], fraction: float, seed: int = 0
) -> tuple[list[ExampleResult], list[ExampleResult]]:
    """A deterministic split ``(fit, holdout)``, stratified by label."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    hold: set[int] = set()
    for label in (True, False):
        idx = [i for i, r in enumerate(results) if r.unsafe == label]
        k = round(len(idx) * fraction)
        hold.update(idx[j] for j in rng.choice(len(idx), k, replace=False))
    return (
        [r for i, r in enumerate(results) if i not in hold],
        [r for i, r in enumerate(results) if i in hold],
    )


# --- file format ------------------------------------------------------------------------------

_HEADER = """\
# Guardwire per-category thresholds (written by `guardwire calibrate`).
# Rule "top-category": the verdict is UNSAFE when unsafe_score >= thresholds[top category],
# where the top category is the code with the highest category score; codes without an entry
# use thresholds.default. Format and calibration method: docs/evaluation.md.
"""


def _code_key(code: str) -> tuple[str, int, str]:
    head = code.rstrip("0123456789")
    tail = code[len(head) :]
    return (head, int(tail) if tail else -1, code)


def _plain(obj: Any) -> Any:
    """YAML-safe plain types (numpy scalars → Python, nan → null)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return _plain(obj.item())
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    return obj


def write_thresholds(policy: ThresholdPolicy, path: str | Path) -> None:
    ordered = {"default": float(policy.thresholds["default"])}
    for code in sorted((c for c in policy.thresholds if c != "default"), key=_code_key):
        ordered[code] = float(policy.thresholds[code])
    doc = {
        "kind": KIND,
        "version": VERSION,
        "rule": policy.rule,
        "thresholds": ordered,
        "metadata": _plain(dict(policy.metadata)),
    }
    text = _HEADER + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
    Path(path).write_text(text, encoding="utf-8")
