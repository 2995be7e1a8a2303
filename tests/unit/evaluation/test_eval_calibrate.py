"""calibrate.py: the top-category rule, the FPR bound, holdout split, the YAML file format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from guardwire_tools.evaluation import calibrate as C
from guardwire_tools.evaluation.runner import ExampleResult


def _results(n: int = 2000, seed: int = 0) -> list[ExampleResult]:
    """Synthetic scores: category S1 is noisy (safe examples score high), S2 is clean."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        unsafe = rng.random() < 0.3
        top = "S1" if rng.random() < 0.5 else ("S2" if rng.random() < 0.97 else "S3")
        shift = 0.35 if top == "S1" else 0.0
        score = float(np.clip(rng.normal(0.7 if unsafe else 0.2 + shift, 0.15), 0, 1))
        cats = {c: score * (0.8 if c == top else 0.1) for c in ("S1", "S2", "S3")}
        out.append(
            ExampleResult(
                f"e{i}",
                unsafe,
                frozenset(),
                None,
                {},
                unsafe_score=score,
                verdict="unsafe" if score >= 0.5 else "safe",
                threshold=0.5,
                category_scores=cats,
            )
        )
    return out


def test_top_category_and_decide() -> None:
    assert C.top_category({}) is None
    assert C.top_category({"S2": 0.3, "S1": 0.3, "S3": 0.1}) == "S1"  # tie: sorts first
    pol = C.ThresholdPolicy({"default": 0.5, "S1": 0.8})
    assert pol.decide(0.7, {"S1": 0.6, "S2": 0.1}) == (False, "S1", 0.8)
    assert pol.decide(0.7, {"S1": 0.1, "S2": 0.6}) == (True, "S2", 0.5)
    assert pol.decide(0.5, {}) == (True, None, 0.5)


@pytest.mark.parametrize("target", [0.01, 0.05, 0.1])
def test_calibrated_fpr_is_within_target_on_fit_data(target: float) -> None:
    rows = _results()
    pol = C.calibrate(rows, target)
    fit = C.evaluate_thresholds(rows, pol)
    assert fit["overall"]["fpr"] <= target
    for key, g in fit["groups"].items():
        if g["negatives"]:
            assert g["fpr"] <= target + 1e-12, key
    assert set(pol.thresholds) == {"default", "S1", "S2"}  # S3 has too few negatives
    assert pol.thresholds["S1"] > pol.thresholds["S2"]  # the noisy category is stricter
    cal = pol.metadata["calibration"]
    assert cal["examples"] == 2000 and cal["negatives"] + cal["positives"] == 2000
    # per-category beats the single threshold on recall here, at no more than the target FPR
    assert cal["per_category"]["recall"] > cal["single_threshold"]["recall"]
    assert cal["single_threshold"]["fpr"] <= target


def test_each_threshold_is_the_lowest_allowed() -> None:
    rows = _results()
    pol = C.calibrate(rows, 0.05)
    s1 = [r for r in rows if C.top_category(r.category_scores) == "S1"]
    neg = sorted((r.unsafe_score for r in s1 if not r.unsafe), reverse=True)
    allowed = int(0.05 * len(neg))
    assert neg[allowed] < pol.thresholds["S1"] <= neg[allowed - 1]


def test_calibrate_edges() -> None:
    with pytest.raises(ValueError, match="target FPR"):
        C.calibrate(_results(50), 0.0)
    only_pos = [r for r in _results(100) if r.unsafe]
    with pytest.raises(ValueError, match="negatives"):
        C.calibrate(only_pos, 0.05)
    small = _results(30)
    pol = C.calibrate(small, 0.05)  # no category has 20 negatives: default only
    assert set(pol.thresholds) == {"default"}
    errored = [*small, ExampleResult("x", False, frozenset(), None, {}, error_reason="OVERLOADED")]
    assert C.calibrate(errored, 0.05).thresholds == pol.thresholds  # errors left out


def test_split_holdout_is_deterministic_and_stratified() -> None:
    rows = _results(500)
    fit, hold = C.split_holdout(rows, 0.3, seed=1)
    _, hold2 = C.split_holdout(rows, 0.3, seed=1)
    assert [r.id for r in hold] == [r.id for r in hold2] and len(fit) + len(hold) == 500
    pos = sum(r.unsafe for r in rows)
    assert sum(r.unsafe for r in hold) == round(pos * 0.3)
    with pytest.raises(ValueError):
        C.split_holdout(rows, 1.0)


def test_file_round_trip(tmp_path: Path) -> None:
    pol = C.calibrate(_results(), 0.05)
    meta = {**pol.metadata, "model_id": "m", "nan": float("nan"), "np": np.float64(0.25)}
    C.write_thresholds(C.ThresholdPolicy(pol.thresholds, C.RULE, meta), tmp_path / "p.yaml")
    text = (tmp_path / "p.yaml").read_text()
    assert text.startswith("# Guardwire per-category thresholds")
    doc = yaml.safe_load(text)
    assert list(doc) == ["kind", "version", "rule", "thresholds", "metadata"]
    assert list(doc["thresholds"]) == ["default", "S1", "S2"]
    assert doc["metadata"]["nan"] is None and doc["metadata"]["np"] == 0.25
    back = C.load_thresholds(tmp_path / "p.yaml")
    assert dict(back.thresholds) == dict(pol.thresholds)  # exact floats
    assert back.rule == "top-category" and back.metadata["model_id"] == "m"


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("thresholds: {S1: 0.4}", "'default'"),
        ("thresholds: {default: 0}", "must be in"),
        ("thresholds: {default: 1.5}", "must be in"),
        ("thresholds: {default: yes}", "expected a number"),
        ("thresholds: {default: 0.5, 'bad code!': 0.2}", "not a category code"),
        ("thresholds: {default: 0.5}\nrule: any-category", "rule must be"),
        ("thresholds: {default: 0.5}\nversion: 2", "unsupported version"),
        ("thresholds: {default: 0.5}\nkind: other", "kind must be"),
        ("thresholds: {default: 0.5}\nthreshold: 0.3", "unknown key"),
        ("thresholds: {default: 0.5}\nmetadata: [1]", "'metadata' must be"),
        ("- a", "top level"),
        ("{{", "not valid YAML"),
    ],
)
def test_load_rejects_bad_files(tmp_path: Path, text: str, msg: str) -> None:
    p = tmp_path / "t.yaml"
    p.write_text(text)
    with pytest.raises(C.ThresholdFileError, match=msg) as info:
        C.load_thresholds(p)
    assert str(p) in str(info.value)


def test_minimal_hand_written_file(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text("thresholds:\n  default: 0.5\n  S1: 0.42\n")
    pol = C.load_thresholds(p)
    assert pol.thresholds == {"default": 0.5, "S1": 0.42} and pol.metadata == {}
    with pytest.raises(C.ThresholdFileError, match="does not exist"):
        C.load_thresholds(tmp_path / "none.yaml")
