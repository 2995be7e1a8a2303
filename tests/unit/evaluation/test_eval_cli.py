"""eval_main / calibrate_main end to end with a stub client in place of the gRPC client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from guardwire_tools.evaluation.calibrate import load_thresholds
from guardwire_tools.evaluation.cli import calibrate_main, eval_main
from tests.unit.evaluation.eval_helpers import OPENAI_MOD, XSTEST, StubClient, need


def _factory(target: str, timeout: float) -> StubClient:
    assert target == "127.0.0.1:1" and timeout == 30.0
    return StubClient()


def _jsonl(tmp_path: Path, n: int = 200) -> Path:
    p = tmp_path / "d.jsonl"
    rows = []
    for i in range(n):
        bad = i % 3 == 0
        rows.append(
            {
                "id": f"r{i}",
                "conversation": [{"role": "user", "content": f"msg {i}" + (" bad" if bad else "")}],
                "unsafe": bad,
                "categories": ["S1"] if bad else [],
            }
        )
    return _write_jsonl(p, rows)


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_main_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib (eval extra) draws the PR curve")
    out = tmp_path / "out"
    rc = eval_main(
        [
            "--target",
            "127.0.0.1:1",
            "--dataset",
            str(_jsonl(tmp_path)),
            "--limit",
            "50",
            "--concurrency",
            "3",
            "--out",
            str(out),
        ],
        client_factory=_factory,
    )
    assert rc == 0
    std = capsys.readouterr()
    assert std.out.startswith("[TEST MODEL] jsonl: scored 50/50 (errors 0, not run 0)")
    assert "WARNING: TEST MODEL" in std.err and "eval [" in std.err  # banner + progress bar
    rep = json.loads((out / "report.json").read_text())
    assert rep["dataset"]["selected"] == 50 and rep["target"] == "127.0.0.1:1"
    assert rep["per_category"]["S1"]["positives"] == rep["counts"]["scored_unsafe"]
    assert (out / "pr_curve.png").exists()


def test_eval_main_openai_zero_shot_policy(tmp_path: Path) -> None:
    data = need(OPENAI_MOD)
    out = tmp_path / "o"
    rc = eval_main(
        [
            "--target",
            "127.0.0.1:1",
            "--dataset",
            str(data),
            "--limit",
            "40",
            "--categories",
            "openai-moderation",
            "--no-progress",
            "--out",
            str(out),
        ],
        client_factory=_factory,
    )
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert [c[0] for c in rep["policy"]["custom_categories"]] == [f"S{i}" for i in range(1, 9)]
    assert rep["per_category"]["S1"]["name"] == "name-S1"
    assert rep["dataset"]["format"] == "openai-moderation"
    assert rep["counts"]["selected"] == 40


def test_eval_main_bad_dataset_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = eval_main(
        ["--target", "127.0.0.1:1", "--dataset", str(tmp_path / "none.jsonl")],
        client_factory=_factory,
    )
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_eval_main_aborts_with_exit_1(tmp_path: Path) -> None:
    p = _write_jsonl(
        tmp_path / "f.jsonl", [{"prompt": f"FAIL {i}", "unsafe": False} for i in range(20)]
    )
    rc = eval_main(
        [
            "--target",
            "127.0.0.1:1",
            "--dataset",
            str(p),
            "--max-errors",
            "2",
            "--concurrency",
            "1",
            "--no-progress",
            "--out",
            str(tmp_path / "o"),
        ],
        client_factory=_factory,
    )
    assert rc == 1
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["aborted"] == "more than 2 errors" and rep["counts"]["not_run"] == 17


def test_calibrate_main_live_and_from_predictions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _jsonl(tmp_path, 600)
    rc = calibrate_main(
        [
            "--target",
            "127.0.0.1:1",
            "--dataset",
            str(data),
            "--target-fpr",
            "0.05",
            "--min-negatives",
            "10",
            "--holdout",
            "0.25",
            "--no-progress",
            "--out",
            str(tmp_path / "policy.yaml"),
            "--report-dir",
            str(tmp_path / "rep"),
        ],
        client_factory=_factory,
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert out.startswith("[TEST MODEL] wrote ") and "holdout (150 examples)" in out
    pol = load_thresholds(tmp_path / "policy.yaml")
    assert "default" in pol.thresholds
    md = pol.metadata
    assert md["target_fpr"] == 0.05 and md["model_id"] == "stub-test-model"
    assert md["calibration"]["per_category"]["fpr"] <= 0.05
    assert md["holdout"]["examples"] == 150 and "TEST MODEL" in md["warning"]
    assert md["dataset"]["sha256"]
    # the same thresholds again, from the saved eval run, without a server
    rc = calibrate_main(
        [
            "--predictions",
            str(tmp_path / "rep"),
            "--target-fpr",
            "0.05",
            "--min-negatives",
            "10",
            "--holdout",
            "0.25",
            "--out",
            str(tmp_path / "again.yaml"),
        ]
    )
    assert rc == 0
    again = load_thresholds(tmp_path / "again.yaml")
    assert again.thresholds == pol.thresholds
    assert yaml.safe_load((tmp_path / "again.yaml").read_text())["metadata"]["policy_id"]


def test_calibrate_main_needs_a_source(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        calibrate_main(["--target-fpr", "0.05", "--out", "x.yaml"])
    assert info.value.code == 2
    assert "--predictions" in capsys.readouterr().err


def test_calibrate_main_without_negatives_is_exit_1(tmp_path: Path) -> None:
    p = _write_jsonl(
        tmp_path / "pos.jsonl", [{"prompt": f"bad {i}", "unsafe": True} for i in range(10)]
    )
    rc = calibrate_main(
        [
            "--target",
            "127.0.0.1:1",
            "--dataset",
            str(p),
            "--target-fpr",
            "0.05",
            "--no-progress",
            "--out",
            str(tmp_path / "p.yaml"),
        ],
        client_factory=_factory,
    )
    assert rc == 1 and not (tmp_path / "p.yaml").exists()


def test_eval_main_xstest_sample(tmp_path: Path) -> None:
    data = need(XSTEST)
    rc = eval_main(
        [
            "--target",
            "127.0.0.1:1",
            "--dataset",
            str(data),
            "--limit",
            "40",
            "--no-progress",
            "--out",
            str(tmp_path),
        ],
        client_factory=_factory,
    )
    assert rc == 0
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["counts"]["scored"] == 40 and rep["counts"]["scored_unsafe"] == 18
    assert rep["per_category"] == {} and len(rep["by_tag"]["type"]) <= 18
    assert rep["published"]["rows"][1][2] == "0.884 / 0.044"
