"""`guardwire eval` / `calibrate` through a real server (tiny random-weight test model) on 40
examples of each shared dataset. The numbers are meaningless (test model); the plumbing is not:
every example is scored or counted as an error, the report files exist and agree with each other.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from guardwire_tools.evaluation import metrics
from guardwire_tools.evaluation.calibrate import load_thresholds
from guardwire_tools.evaluation.cli import calibrate_main, eval_main
from guardwire_tools.evaluation.datasets import load_dataset
from guardwire_tools.evaluation.report import TEST_MODEL_BANNER, write_report
from guardwire_tools.evaluation.runner import run_eval

HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
DATASETS = {
    "openai-moderation": SHARED / "openai-moderation-eval" / "samples-1680.jsonl.gz",
    "xstest": SHARED / "xstest" / "xstest_prompts.csv",
    "xstest-completions": SHARED / "xstest" / "model_completions",
}


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared dataset absent: {path} (CI has ../shared)")
    return path


def _check_report(out: Path, selected: int, backend: str) -> dict[str, Any]:
    rep = json.loads((out / "report.json").read_text())
    files = ["predictions.jsonl", "report.json", "report.md"]
    if HAVE_MATPLOTLIB:
        files.insert(0, "pr_curve.png")
        assert (out / "pr_curve.png").read_bytes().startswith(b"\x89PNG")
    else:  # the eval extra is missing: the report says so instead of plotting
        assert "matplotlib is not installed" in rep["plot_note"]
    assert sorted(p.name for p in out.iterdir()) == files
    c = rep["counts"]
    assert c["selected"] == selected == c["scored"] + c["errors"] + c["not_run"]
    assert c["scored"] == c["scored_unsafe"] + c["scored_safe"]
    assert c["errors"] == 0 and c["not_run"] == 0 and rep["aborted"] is None
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == c["scored"] + c["errors"]
    y = [p["unsafe"] for p in preds]
    s = [p["unsafe_score"] for p in preds]
    o = rep["overall"]
    auprc = metrics.average_precision(y, s)
    assert o["auprc"] == pytest.approx(auprc, abs=1e-12) if o["auprc"] is not None else True
    served = o["at_served_threshold"]
    assert served["tp"] + served["fp"] + served["tn"] + served["fn"] == c["scored"]
    assert served["tp"] + served["fn"] == c["scored_unsafe"]
    assert sum(p["verdict"] == "unsafe" for p in preds) == served["tp"] + served["fp"]
    assert rep["verdict_score_mismatches"] == 0
    assert rep["served_threshold"] == pytest.approx(0.5)
    assert rep["model_id"] and rep["policy_id"].startswith("p-")
    assert rep["model_info"].get("backend") == backend
    assert rep["test_model"] is True and rep["banner"] == TEST_MODEL_BANNER
    md = (out / "report.md").read_text()
    assert f"> **{TEST_MODEL_BANNER}**" in md
    return rep


@pytest.mark.parametrize("fmt", list(DATASETS))
async def test_eval_40_examples_through_the_real_server(guard_server, tmp_path, fmt):
    ds = load_dataset(need(DATASETS[fmt]), fmt, limit=40, seed=0)
    assert len(ds.examples) == 40 and any(e.unsafe for e in ds.examples)
    run = await run_eval(
        guard_server.target, ds.examples, concurrency=8, timeout=60, progress=False
    )
    rep = write_report(
        run,
        ds.summary(),
        tmp_path,
        category_codes=ds.category_codes,
        category_names=ds.category_names,
    )
    rep = _check_report(tmp_path, 40, guard_server.backend)
    if fmt == "openai-moderation":
        pc = rep["per_category"]
        assert set(pc) == {"S1", "S4", "S10", "S11", "S12"}
        assert pc["S10"]["name"] == "Hate"  # the server's name for its code
        assert all("auprc" in v for v in pc.values())  # the default policy scores every code
    else:
        assert rep["per_category"] == {}
        assert sum(t["n"] for t in rep["by_tag"]["type"].values()) == 40


async def test_cli_eval_and_calibrate_against_the_real_server(guard_server, tmp_path, capsys):
    """The CLI functions run in a worker thread (their own event loop) while the server runs."""
    xstest = need(DATASETS["xstest"])
    out = tmp_path / "eval"
    rc = await asyncio.to_thread(
        eval_main,
        [
            "--target",
            guard_server.target,
            "--dataset",
            str(xstest),
            "--limit",
            "40",
            "--concurrency",
            "4",
            "--out",
            str(out),
        ],
    )
    assert rc == 0
    std = capsys.readouterr()
    assert std.out.startswith("[TEST MODEL] xstest: scored 40/40 (errors 0, not run 0)")
    assert "eval [" in std.err  # progress bar
    _check_report(out, 40, guard_server.backend)

    rc = await asyncio.to_thread(
        calibrate_main,
        [
            "--target",
            guard_server.target,
            "--dataset",
            str(xstest),
            "--limit",
            "40",
            "--target-fpr",
            "0.1",
            "--min-negatives",
            "5",
            "--no-progress",
            "--out",
            str(tmp_path / "policy.yaml"),
        ],
    )
    assert rc == 0
    pol = load_thresholds(tmp_path / "policy.yaml")
    assert 0 < pol.thresholds["default"] <= 1
    assert pol.metadata["calibration"]["per_category"]["fpr"] <= 0.1
    assert pol.metadata["model_id"] and "TEST MODEL" in pol.metadata["warning"]
    # same data, same server, same sample: the offline path from the eval run agrees
    rc = calibrate_main(
        [
            "--predictions",
            str(out),
            "--target-fpr",
            "0.1",
            "--min-negatives",
            "5",
            "--out",
            str(tmp_path / "again.yaml"),
        ]
    )
    assert rc == 0
    # (scores of a re-run may differ in the 7th digit: batch composition changes fp32 sums)
    again = load_thresholds(tmp_path / "again.yaml").thresholds
    assert again.keys() == pol.thresholds.keys()
    assert all(again[k] == pytest.approx(pol.thresholds[k], abs=1e-5) for k in again)
