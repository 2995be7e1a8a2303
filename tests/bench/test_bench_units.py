"""Fast tests of the bench's pure pieces: batching, queue replay, percentiles, the report."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardwire_tools.bench.baselines import chunk
from guardwire_tools.bench.report import fifo_replay, markdown, percentile, plot
from guardwire_tools.bench.workload import load_workload


def test_chunk_respects_size_and_padded_token_budget():
    lengths = [10, 50, 20, 200, 5]
    batches = chunk(lengths, range(5), max_size=2, max_tokens=120)
    assert batches == [[0, 1], [2], [3], [4]]
    for b in batches:
        assert len(b) <= 2
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 120
    assert sorted(i for b in batches for i in b) == list(range(5))


def test_fifo_replay_matches_queueing_intuition():
    idle = fifo_replay([0.1], rate=0.01, arrivals=2000)
    assert percentile(idle, 50) == pytest.approx(0.1, rel=0.05)
    busy = fifo_replay([0.1], rate=9.0, arrivals=5000)  # 90 % utilisation
    assert percentile(busy, 50) > 0.3 and percentile(busy, 99) > percentile(busy, 50)


def test_percentile_edges():
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0], 99) == 2.0


def _results():
    lat = {"0.5": {"offered": 1.0, "p50": 0.2, "p99": 0.5, "n": 10}}
    return {
        "meta": {
            "shape": "small", "date": "today", "cpu": "CPU", "cores": 2, "memory_gb": 8,
            "torch": "x", "transformers": "y", "python": "3.11", "shape_note": "proxy",
            "params_m": 1.0, "dtype": "bfloat16", "device": "cpu", "threads": 0,
            "tokenizer": "t", "workload": "w", "requests": 4,
            "tokens": {"prefix": [136], "tail_mean": 100, "tail_max": 200, "total_mean": 236},
            "server_args": "--x 1", "concurrency": 16, "duration_s": 1.0,
            "load_fractions": [0.5], "command": "python -m bench",
        },
        "rows": [
            {"key": "moderate", "n": "1", "label": "loop", "rps": 1.0, "latency": lat},
            {"key": "server", "n": "3", "label": "server", "rps": 4.0, "latency": lat,
             "unloaded": {"p50": 0.1, "p99": 0.2}, "mean_batch": 3.0},
            {"key": "floor", "n": "4", "label": "floor", "rps": 5.0},
        ],
        "overhead": {"rps": 2500.0, "p50": 0.01, "p99": 0.05, "concurrency": 64,
                     "channels": 4, "duration_s": 1.0, "mean_batch": 8.0, "errors": {},
                     "server_cpu_ms": 0.8, "client_cpu_ms": 0.3,
                     "bare_grpc": {"rps": 5000.0, "p50": 0.004, "server_cpu_ms": 0.2,
                                   "errors": {}}},
        "notes": ["a note"],
    }  # fmt: skip


def test_markdown_has_the_ratios(tmp_path: Path):
    text = markdown(_results())
    assert "| server ÷ moderate() loop (3 ÷ 1), req/s | 4.00× |" in text
    assert "| server ÷ compute floor (3 ÷ 4), req/s | 0.80× |" in text
    assert "2,500 req/s" in text and "- a note" in text
    assert "**5,000 req/s**" in text and "serves 0.50× of that" in text
    assert "spends 4.00× its server CPU per request (0.80 vs 0.20 ms)" in text
    plot(_results(), tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_plot_skips_a_load_phase_that_got_no_answers(tmp_path: Path):
    results = _results()
    results["rows"][1]["latency"] = {
        "0.5": {"offered": 1.0, "p50": 0.2, "p99": 0.5, "n": 10},
        "0.9": {"offered": 2.0, "p50": None, "p99": None, "n": 0},  # every call failed
    }
    plot(results, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_workload_mixes_prompt_and_response_checks():
    w = load_workload(size=200, seed=1)
    users = sum(1 for c in w.conversations if c[-1][0] == "user")
    assert users == 100
    assert all(text and text == text.strip() for c in w.conversations for _, text in c)
    assert w.take(3) == w.conversations[:3] and len(w.take(250)) == 250
    assert load_workload(size=200, seed=1).conversations == w.conversations
    assert load_workload(Path("/nonexistent"), size=10).source.startswith("a synthetic")
