"""Binary-classification metrics for guard scores, in plain numpy.

Definitions follow scikit-learn so numbers are comparable with published work:

- ``average_precision`` (AUPRC) is ``sklearn.metrics.average_precision_score``: the step-wise sum
  ``Σ (R_k − R_{k−1}) · P_k`` over the distinct score thresholds, no interpolation.
- ``roc_auc`` is ``sklearn.metrics.roc_auc_score``: the trapezoidal area under the ROC curve over
  the distinct thresholds, so tied scores count one half (the Mann-Whitney statistic).
- A prediction is positive when ``score >= threshold``, the same rule the server applies.
- Precision, recall and F1 use scikit-learn's ``zero_division=0`` convention (0 when undefined).

Where scikit-learn warns and returns a number for a single-class input we say "undefined" instead:
``average_precision`` and ``roc_auc`` return ``nan`` when there is no positive or no negative
(scikit-learn's AP returns 0.0 with a warning when there is no positive, 1.0 when all are positive;
the all-positive case is kept at 1.0, matching it). ``fpr`` is ``nan`` when there is no negative.
Reports print ``nan`` as "n/a".

Example::

    >>> y, s = [0, 1, 1, 0], [0.1, 0.4, 0.35, 0.8]
    >>> round(average_precision(y, s), 4)
    0.5833
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "ThresholdMetrics",
    "at_threshold",
    "average_precision",
    "best_f1",
    "binary_clf_curve",
    "precision_recall_curve",
    "roc_auc",
    "roc_curve",
    "threshold_for_fpr",
]

FloatArray = npt.NDArray[np.float64]
ArrayLike = Sequence[float] | Sequence[int] | Sequence[bool] | npt.NDArray[Any]


def _check(y_true: ArrayLike, scores: ArrayLike) -> tuple[FloatArray, FloatArray]:
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError("labels and scores must be one-dimensional")
    if y.shape != s.shape:
        raise ValueError(f"{y.shape[0]} labels but {s.shape[0]} scores")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite (got nan or inf)")
    if y.dtype != np.bool_:
        bad = ~np.isin(y, (0, 1))
        if np.any(bad):
            raise ValueError(f"labels must be 0/1 or bool, got {y[bad][0]!r}")
    return y.astype(np.float64), s


def binary_clf_curve(
    y_true: ArrayLike, scores: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """True and false positives when predicting ``score >= t`` for each distinct score ``t``.

    Returns ``(fps, tps, thresholds)`` with thresholds in decreasing order (scikit-learn's
    ``_binary_clf_curve``).
    """
    y, s = _check(y_true, scores)
    if y.size == 0:
        raise ValueError("no examples")
    order = np.argsort(s, kind="mergesort")[::-1]
    s = s[order]
    y = y[order]
    distinct = np.where(np.diff(s))[0]
    idx = np.r_[distinct, y.size - 1]
    tps = np.cumsum(y)[idx]
    fps = 1.0 + idx - tps
    return fps, tps, s[idx]


def precision_recall_curve(
    y_true: ArrayLike, scores: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(precision, recall, thresholds)`` laid out exactly as scikit-learn returns them.

    Thresholds increase; ``precision`` and ``recall`` have one more element than ``thresholds``,
    ending at precision 1 and recall 0. With no positive, recall is set to 1 (as scikit-learn does).
    """
    fps, tps, thr = binary_clf_curve(y_true, scores)
    precision = tps / (tps + fps)
    recall = np.ones_like(tps) if tps[-1] == 0 else tps / tps[-1]
    sl = slice(None, None, -1)
    return (
        np.hstack((precision[sl], 1.0)),
        np.hstack((recall[sl], 0.0)),
        thr[sl],
    )


def average_precision(y_true: ArrayLike, scores: ArrayLike) -> float:
    """AUPRC as scikit-learn's ``average_precision_score``; ``nan`` when there is no positive."""
    y, s = _check(y_true, scores)
    if y.size == 0 or not np.any(y == 1):
        return math.nan
    precision, recall, _ = precision_recall_curve(y, s)
    return float(-np.sum(np.diff(recall) * precision[:-1]))


def roc_curve(y_true: ArrayLike, scores: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(fpr, tpr, thresholds)``, starting at (0, 0) with threshold +inf (no point dropped)."""
    fps, tps, thr = binary_clf_curve(y_true, scores)
    fps = np.r_[0.0, fps]
    tps = np.r_[0.0, tps]
    thr = np.r_[np.inf, thr]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full_like(fps, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full_like(tps, np.nan)
    return fpr, tpr, thr


def roc_auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (trapezoidal, ties count 1/2); ``nan`` for a single class."""
    y, s = _check(y_true, scores)
    n_pos = int(np.sum(y == 1))
    if n_pos == 0 or n_pos == y.size:
        return math.nan
    fpr, tpr, _ = roc_curve(y, s)
    # trapezoidal rule written out: np.trapezoid is NumPy >= 2 only, np.trapz is deprecated there
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


@dataclass(frozen=True, slots=True)
class ThresholdMetrics:
    """Confusion counts and rates when predicting ``score >= threshold``."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    precision: float
    recall: float
    f1: float
    fpr: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _counts_to_metrics(threshold: float, tp: int, fp: int, tn: int, fn: int) -> ThresholdMetrics:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    fpr = fp / (fp + tn) if fp + tn else math.nan
    return ThresholdMetrics(threshold, tp, fp, tn, fn, precision, recall, f1, fpr)


def at_threshold(y_true: ArrayLike, scores: ArrayLike, threshold: float) -> ThresholdMetrics:
    """Precision, recall, F1 and false-positive rate when predicting ``score >= threshold``."""
    y, s = _check(y_true, scores)
    pred = s >= threshold
    pos = y == 1
    tp = int(np.sum(pred & pos))
    fp = int(np.sum(pred & ~pos))
    fn = int(np.sum(~pred & pos))
    tn = int(np.sum(~pred & ~pos))
    return _counts_to_metrics(float(threshold), tp, fp, tn, fn)


def at_predictions(y_true: ArrayLike, predicted: ArrayLike, threshold: float) -> ThresholdMetrics:
    """Same metrics from ready-made boolean decisions (e.g. the server's verdicts)."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(predicted).astype(bool)
    if y.shape != p.shape:
        raise ValueError(f"{y.shape[0]} labels but {p.shape[0]} predictions")
    return _counts_to_metrics(
        float(threshold),
        int(np.sum(p & y)),
        int(np.sum(p & ~y)),
        int(np.sum(~p & ~y)),
        int(np.sum(~p & y)),
    )


def best_f1(y_true: ArrayLike, scores: ArrayLike) -> ThresholdMetrics:
    """The threshold (one of the observed scores) with the highest F1.

    Among thresholds with equal F1 the highest one wins (fewer false positives for the same F1).
    With no positive every F1 is 0 and the highest score is returned.
    """
    y, s = _check(y_true, scores)
    fps, tps, thr = binary_clf_curve(y, s)
    n_pos = float(np.sum(y))
    fns = n_pos - tps
    denom = 2 * tps + fps + fns
    f1 = np.divide(2 * tps, denom, out=np.zeros_like(tps), where=tps > 0)
    k = int(np.argmax(f1))  # thresholds decrease: the first maximum is the highest threshold
    return at_threshold(y, s, float(thr[k]))


def threshold_for_fpr(
    y_true: ArrayLike, scores: ArrayLike, target_fpr: float
) -> tuple[float, bool]:
    """Lowest threshold whose false-positive rate is at most ``target_fpr``; ``(t, reachable)``.

    The highest recall a single threshold can reach under the FPR bound. With ``k =
    floor(target_fpr · n_negative)`` allowed false positives, the threshold sits halfway between
    the (k+1)-th highest negative score and the next higher observed score, so a rounding of the
    scores to float32 on the wire does not move any example across it. When that score is already
    1.0 the bound cannot be met below 1: ``(1.0, False)`` is returned. With no negative the
    lowest observed score is returned (everything flagged, FPR undefined).
    """
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target_fpr must be in [0, 1], got {target_fpr}")
    y, s = _check(y_true, scores)
    if s.size == 0:
        raise ValueError("no examples")
    neg = np.sort(s[y == 0])[::-1]
    if neg.size == 0:
        return float(np.min(s)), True
    allowed = math.floor(target_fpr * neg.size + 1e-9)
    if allowed >= neg.size:
        return float(np.min(s)), True
    bar = float(neg[allowed])  # this negative (and all below) must stay below the threshold
    if bar >= 1.0:
        return 1.0, False
    above = s[s > bar]
    upper = float(np.min(above)) if above.size else 1.0
    return (bar + upper) / 2.0, True
