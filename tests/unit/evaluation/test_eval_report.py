"""report.py: numbers agree with metrics, counts add up, banner, files, markdown, plot."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from guardwire_tools.evaluation import metrics
from guardwire_tools.evaluation import report as R
from guardwire_tools.evaluation.datasets import LabeledExample
from guardwire_tools.evaluation.runner import EvalRun, ExampleResult, run_eval
from tests.unit.evaluation.eval_helpers import StubClient


def _examples(n: int = 60) -> list[LabeledExample]:
    out = []
    for i in range(n):
        bad = i % 4 == 0
        cats = frozenset({"S1"} if i % 8 == 0 else {"S10"}) if bad else frozenset()
        out.append(
            LabeledExample(
                [("user", f"t{i}" + (" bad" if i % 5 else ""))],
                bad,
                cats,
                f"e{i}",
                tags={"type": f"k{i % 3}"},
            )
        )
    out.append(LabeledExample([("user", "FAIL")], False, frozenset(), "broken"))
    return out


async def _run() -> EvalRun:
    return await run_eval(StubClient(), _examples(), concurrency=4, progress=False)


async def test_build_report_numbers_and_counts() -> None:
    run = await _run()
    ds = {"format": "jsonl", "path": "x.jsonl", "sha256": "0" * 64}
    rep = R.build_report(
        run, ds, category_codes=("S1", "S10", "S99"), category_names={"S1": "Violent Crimes"}
    )
    c = rep["counts"]
    assert c["selected"] == c["scored"] + c["errors"] + c["not_run"] == 61
    assert c["errors"] == 1 and rep["errors"]["by_reason"] == {"BACKEND_FAILURE": 1}
    assert rep["errors"]["examples"][0]["id"] == "broken"
    scored = run.scored
    y = [r.unsafe for r in scored]
    s = [r.unsafe_score for r in scored]
    o = rep["overall"]
    assert o["auprc"] == metrics.average_precision(y, s)
    assert o["roc_auc"] == metrics.roc_auc(y, s)
    assert o["at_served_threshold"] == metrics.at_threshold(y, s, 0.5).as_dict()
    assert o["at_best_f1"]["f1"] >= o["at_served_threshold"]["f1"]
    assert rep["verdict_score_mismatches"] == 0
    assert rep["test_model"] is True and rep["banner"] == R.TEST_MODEL_BANNER  # "stub-test-..."
    pc = rep["per_category"]
    assert pc["S1"]["positives"] == 8 and pc["S1"]["name"] == "name-S1"  # server's name wins
    assert pc["S1"]["negatives"] == 60 - 8
    assert "no score" in pc["S99"]["note"]
    assert rep["by_tag"]["type"]["k0"]["n"] == 20
    assert rep["published"] is None


def test_is_test_model() -> None:
    assert R.is_test_model("guardwire-demo-tiny-random")
    assert R.is_test_model("x", {"backend": "fake"})
    assert not R.is_test_model("meta-llama/Llama-Guard-3-1B", {"backend": "torch"})


async def test_write_report_files(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib (eval extra) draws the PR curve")
    run = await _run()
    ds = {
        "format": "xstest",
        "path": "xstest_prompts.csv",
        "sha256": "ab" * 32,
        "examples_in_file": 450,
        "selected": 61,
        "limit": 61,
        "seed": 0,
        "skipped": {},
        "label_view": "label column",
    }
    rep = R.write_report(run, ds, tmp_path / "out", category_codes=("S1",))
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["pr_curve.png", "predictions.jsonl", "report.json", "report.md"]
    png = (tmp_path / "out" / "pr_curve.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    data = json.loads((tmp_path / "out" / "report.json").read_text())  # strict JSON, no NaN
    assert data["counts"] == rep["counts"] and data["plot"] == "pr_curve.png"
    preds = [
        json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    ]
    assert len(preds) == 61 and sum(p["error_reason"] is not None for p in preds) == 1
    assert "conversation" not in preds[0] and "t0" not in json.dumps(preds)  # no text
    back = ExampleResult.from_json(preds[0])
    assert back.latency_s == pytest.approx(run.results[0].latency_s, abs=1e-6)
    assert back == dataclasses.replace(run.results[0], latency_s=back.latency_s)
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.startswith("# Guardwire evaluation report\n\n> **TEST MODEL - NOT A SAFETY MODEL")
    assert "| served (server's verdicts) | 0.5000 |" in md
    assert "| BACKEND_FAILURE | 1 |" in md
    assert "Llama Guard 3-8B | F1 / FPR | 0.884 / 0.044" in md
    assert "*For orientation only: this run used a test model.*" in md
    assert "![precision-recall curve](pr_curve.png)" in md
    assert "## By `type`" in md


def test_report_with_nothing_scored_and_nan_values(tmp_path: Path) -> None:
    run = EvalRun(
        target="t",
        results=[
            ExampleResult(
                "a", True, frozenset(), None, {}, error_reason="UNAVAILABLE", error_message="down"
            )
        ],
        selected=3,
        not_run=2,
        aborted="more than 0 errors",
    )
    ds = {
        "format": "openai-moderation",
        "path": "p",
        "sha256": "c" * 64,
        "examples_in_file": 3,
        "selected": 3,
        "limit": None,
        "seed": 0,
        "skipped": {},
        "label_view": "v",
    }
    rep = R.write_report(run, ds, tmp_path, test_model=False)
    assert math.isnan(rep["overall"]["auprc"])
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["overall"]["auprc"] is None and data["banner"] is None
    assert data["plot"] is None and "no scored positive" in data["plot_note"]
    md = (tmp_path / "report.md").read_text()
    assert "**Run aborted: more than 0 errors; 2 examples were not sent.**" in md
    assert "AUPRC **n/a**" in md and "TEST MODEL" not in md.split("## Published")[0]
    assert "0.847" in md  # the published OpenAI-Mod figures are listed


def test_fmt() -> None:
    assert R.fmt(None) == "n/a" and R.fmt(float("nan")) == "n/a"
    assert R.fmt(0.12345) == "0.123" and R.fmt(3) == "3"


async def test_missing_matplotlib_is_a_note_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    run = await _run()
    ds = {
        "format": "jsonl",
        "path": "p",
        "sha256": "c" * 64,
        "examples_in_file": 61,
        "selected": 61,
        "limit": None,
        "seed": 0,
        "skipped": {},
        "label_view": "v",
    }
    rep = R.write_report(run, ds, tmp_path)
    assert rep["plot"] is None and "guardwire[eval]" in rep["plot_note"]
    assert not (tmp_path / "pr_curve.png").exists()
    assert "pip install 'guardwire[eval]'" in (tmp_path / "report.md").read_text()
