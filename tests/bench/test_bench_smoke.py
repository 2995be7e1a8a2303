"""Smoke test of ``python -m bench``: the small shape with tiny durations, end to end (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_bench_small_shape_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDWIRE_")}
    cmd = [
        sys.executable, "-m", "bench", "--shape", "small", "--requests", "4",
        "--duration", "1", "--overhead-duration", "1", "--overhead-concurrency", "8",
        "--threads", "1", "--output", str(out), "--model-cache", str(tmp_path / "models"),
    ]  # fmt: skip
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1700)
    assert run.returncode == 0, run.stderr[-4000:]
    results = json.loads((out / "results-small.json").read_text())
    rows = {r["key"]: r for r in results["rows"]}
    assert {"moderate", "batched_no_prefix", "server", "floor"} <= set(rows)
    assert all(r["rps"] > 0 for r in rows.values())
    assert rows["server"]["latency"]["0.5"]["n"] >= 0
    assert rows["server"]["unloaded"]["p50"] > 0
    assert results["overhead"]["rps"] > 0 and results["overhead"]["bare_grpc"]["rps"] > 0
    assert "stream" in rows or any("StreamClassify" in n for n in results["notes"])
    text = (out / "results-small.md").read_text()
    assert "server ÷ moderate() loop" in text and text in run.stdout
    assert (out / "latency-small.png").stat().st_size > 1000
