"""metrics.py against scikit-learn on synthetic scores (ties, imbalance, one-class edges)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardwire_tools.evaluation import metrics

sk = pytest.importorskip("sklearn.metrics", reason="scikit-learn (dev extra) is the reference")

TOL = 1e-9


def _cases() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1234)
    out = []
    for n, p_pos, decimals in [
        (2, 0.5, None),
        (10, 0.3, 1),
        (50, 0.5, 2),
        (200, 0.1, 1),
        (500, 0.3, None),
        (1000, 0.05, 3),
        (300, 0.9, 1),
        (100, 0.5, 0),
    ]:
        for _ in range(3):
            y = rng.random(n) < p_pos
            if y.all() or not y.any():
                y[0] = not y[0]
            s = np.clip(rng.normal(0.3 + 0.4 * y, 0.25), 0, 1)
            if decimals is not None:
                s = np.round(s, decimals)  # many ties
            out.append((y.astype(int), s))
    return out


CASES = _cases()


@pytest.mark.parametrize("case", range(len(CASES)))
def test_average_precision_matches_sklearn(case: int) -> None:
    y, s = CASES[case]
    assert abs(metrics.average_precision(y, s) - sk.average_precision_score(y, s)) < TOL


@pytest.mark.parametrize("case", range(len(CASES)))
def test_roc_auc_matches_sklearn(case: int) -> None:
    y, s = CASES[case]
    assert abs(metrics.roc_auc(y, s) - sk.roc_auc_score(y, s)) < TOL


@pytest.mark.parametrize("case", range(len(CASES)))
def test_precision_recall_curve_matches_sklearn(case: int) -> None:
    y, s = CASES[case]
    ours = metrics.precision_recall_curve(y, s)
    ref = sk.precision_recall_curve(y, s)
    for a, b in zip(ours, ref, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=TOL)


@pytest.mark.parametrize("case", range(0, len(CASES), 2))
def test_at_threshold_matches_sklearn(case: int) -> None:
    y, s = CASES[case]
    for t in (0.0, 0.2, 0.5, float(np.median(s)), float(s.max()), 1.01):
        m = metrics.at_threshold(y, s, t)
        pred = (s >= t).astype(int)
        tn, fp, fn, tp = sk.confusion_matrix(y, pred, labels=[0, 1]).ravel()
        assert (m.tp, m.fp, m.tn, m.fn) == (tp, fp, tn, fn)
        assert abs(m.precision - sk.precision_score(y, pred, zero_division=0)) < TOL
        assert abs(m.recall - sk.recall_score(y, pred, zero_division=0)) < TOL
        assert abs(m.f1 - sk.f1_score(y, pred, zero_division=0)) < TOL
        assert abs(m.fpr - fp / (fp + tn)) < TOL
        assert m.as_dict()["threshold"] == t


@pytest.mark.parametrize("case", range(len(CASES)))
def test_best_f1_is_the_max_over_sklearn_curve(case: int) -> None:
    y, s = CASES[case]
    best = metrics.best_f1(y, s)
    p, r, thr = sk.precision_recall_curve(y, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)[:-1]
    assert abs(best.f1 - f1.max()) < TOL
    # the highest threshold among the maxima
    assert best.threshold == thr[np.flatnonzero(np.abs(f1 - f1.max()) < 1e-12)].max()
    assert abs(best.f1 - sk.f1_score(y, (s >= best.threshold).astype(int))) < TOL


def test_roc_curve_endpoints() -> None:
    y, s = CASES[5]
    fpr, tpr, thr = metrics.roc_curve(y, s)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert math.isinf(thr[0])
    assert abs(sk.auc(fpr, tpr) - sk.roc_auc_score(y, s)) < TOL


def test_all_ties_give_half_auc_and_base_rate_ap() -> None:
    y = np.array([0, 1, 0, 1, 1])
    s = np.full(5, 0.4)
    assert metrics.roc_auc(y, s) == pytest.approx(0.5, abs=TOL)
    assert metrics.average_precision(y, s) == pytest.approx(0.6, abs=TOL)
    assert abs(metrics.average_precision(y, s) - sk.average_precision_score(y, s)) < TOL


def test_no_positive_is_undefined_not_zero() -> None:
    # scikit-learn warns and returns AP 0.0 / AUC nan; we return nan for both on purpose.
    y, s = [0, 0, 0], [0.1, 0.5, 0.9]
    assert math.isnan(metrics.average_precision(y, s))
    assert math.isnan(metrics.roc_auc(y, s))
    m = metrics.at_threshold(y, s, 0.5)
    assert (m.tp, m.fp, m.tn, m.fn) == (0, 2, 1, 0)
    assert (m.precision, m.recall, m.f1) == (0.0, 0.0, 0.0)
    assert m.fpr == pytest.approx(2 / 3)
    assert metrics.best_f1(y, s).f1 == 0.0


def test_all_positive_matches_sklearn_ap_and_has_no_fpr() -> None:
    y, s = [1, 1, 1], [0.1, 0.5, 0.9]
    assert metrics.average_precision(y, s) == 1.0 == sk.average_precision_score(y, s)
    assert math.isnan(metrics.roc_auc(y, s))
    m = metrics.at_threshold(y, s, 0.5)
    assert math.isnan(m.fpr) and m.recall == pytest.approx(2 / 3) and m.precision == 1.0


def test_perfect_and_inverted_rankings() -> None:
    y = [0, 0, 1, 1]
    assert metrics.average_precision(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.roc_auc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.roc_auc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0


@pytest.mark.parametrize(
    ("y", "s", "msg"),
    [
        ([0, 1], [0.1], "labels but"),
        ([0, 2], [0.1, 0.2], "0/1"),
        ([0, 1], [0.1, float("nan")], "finite"),
        ([], [], "no examples"),
    ],
)
def test_bad_input_is_rejected(y: list[int], s: list[float], msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        metrics.precision_recall_curve(y, s)


def test_threshold_for_fpr_simple() -> None:
    y = [0] * 10 + [1] * 3
    s = [i / 10 for i in range(10)] + [0.95, 0.85, 0.3]
    t, ok = metrics.threshold_for_fpr(y, s, 0.2)  # two false positives allowed: 0.9 and 0.8
    assert ok and 0.7 < t < 0.8
    m = metrics.at_threshold(y, s, t)
    assert m.fp == 2 and m.tp == 2
    t0, _ = metrics.threshold_for_fpr(y, s, 0.0)
    assert metrics.at_threshold(y, s, t0).fp == 0 and t0 > 0.9


def test_threshold_for_fpr_unreachable_and_degenerate() -> None:
    assert metrics.threshold_for_fpr([0, 0, 1], [1.0, 1.0, 1.0], 0.1) == (1.0, False)
    assert metrics.threshold_for_fpr([1, 1], [0.3, 0.6], 0.1) == (0.3, True)
    assert metrics.threshold_for_fpr([0, 1], [0.3, 0.6], 1.0) == (0.3, True)
    with pytest.raises(ValueError, match="target_fpr"):
        metrics.threshold_for_fpr([0, 1], [0.3, 0.6], 1.5)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 20)), min_size=1, max_size=60),
    st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.25, 0.5]),
)
def test_threshold_for_fpr_is_the_best_allowed(
    pairs: list[tuple[bool, int]], target: float
) -> None:
    y = np.array([p[0] for p in pairs], dtype=int)
    s = np.array([p[1] / 20 for p in pairs])
    t, ok = metrics.threshold_for_fpr(y, s, target)
    m = metrics.at_threshold(y, s, t)
    if not (y == 0).any():
        return
    if ok:
        assert m.fpr <= target + 1e-12
        # no lower observed score would keep the bound: the next one down breaks it
        lower = s[s < t]
        if lower.size:
            assert metrics.at_threshold(y, s, lower.max()).fpr > target
    else:
        assert t == 1.0
