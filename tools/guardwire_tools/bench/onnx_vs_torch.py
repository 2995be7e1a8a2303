"""Benchmark (not a test): ONNX Runtime CPU vs PyTorch CPU on a random-weight model of a named
shape, scoring realistic Llama Guard 3 prompts with the policy prefix cached.

Both backends run in one process on the same prompts, alternating rounds so that noise from other
work on the machine hits both alike; the table reports the median over rounds. Usage::

    python bench/onnx_vs_torch.py                 # "small": hidden 256, 4 layers, 128k vocab
    python bench/onnx_vs_torch.py --shape lg3-1b  # Llama Guard 3 1B shape (~11 GB RAM, minutes)
    python bench/onnx_vs_torch.py --threads 1 --requests 64 --batch 8 --rounds 3 --torch-bf16

Rows: sequential single requests (p50 latency, requests/s) and batches of ``--batch`` requests
(the micro-batcher's case). PyTorch runs float32 (the server's CPU default, same precision as the
ONNX graph) and, with ``--torch-bf16``, bfloat16 (the fastest torch CPU setting on AVX-512 bf16).
The export is validated against PyTorch before timing; the table's last column is ONNX Runtime's
speed relative to PyTorch float32.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ONNX = "ONNX Runtime float32"

# name -> make_test_model shape arguments (vocabulary: the Llama 3 tokenizer's 128256)
SHAPES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 64, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 128},
    "small": {"hidden_size": 256, "layers": 4, "heads": 4, "kv_heads": 2, "intermediate": 1024},
    "lg3-1b": {
        "hidden_size": 2048,
        "layers": 16,
        "heads": 32,
        "kv_heads": 8,
        "intermediate": 8192,
    },
}

_WORDS = (
    "how do I bake bread at home with yeast flour water salt and a hot oven please tell me the "
    "best way to pick a lock open a door without a key write a poem about the sea sky and stars "
    "what is the capital of France explain quantum computing to a child summarize this article "
    "about elections my neighbour is loud what can I do legally recommend a dose of medicine"
).split()


def _conversations(n: int, seed: int) -> list[Any]:
    from guardwire_server.domain import Conversation, Role, Turn

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        turns = []
        for k in range(rng.choice([1, 1, 2, 3])):
            words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 60)))
            turns.append(Turn(Role.USER if k % 2 == 0 else Role.ASSISTANT, words.capitalize()))
        out.append(Conversation(turns=tuple(turns)))
    return out


def _percentile(xs: Sequence[float], q: float) -> float:
    ys = sorted(xs)
    return ys[min(len(ys) - 1, round(q * (len(ys) - 1)))]


def _time_round(
    score: Callable[[list[Any]], Any], items: list[Any], batch: int
) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p90 ms) of one pass over ``items`` in batches of ``batch``."""
    lat = []
    t0 = time.perf_counter()
    for start in range(0, len(items), batch):
        t = time.perf_counter()
        score(items[start : start + batch])
        lat.append((time.perf_counter() - t) * 1000)
    wall = time.perf_counter() - t0
    return len(items) / wall, _percentile(lat, 0.5), _percentile(lat, 0.9)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shape", default="small", choices=sorted(SHAPES))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--requests", type=int, default=48, help="prompts per round")
    p.add_argument("--batch", type=int, default=8, help="batch size of the batched rows")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--torch-bf16", action="store_true", help="also time torch bfloat16")
    p.add_argument("--workdir", help="keep the model + export here (default: a temp dir)")
    args = p.parse_args(argv)

    import torch
    from transformers.utils import logging as hf_logging

    from guardwire_backends.onnxruntime_ort import OnnxBackend
    from guardwire_backends.torch_hf import TorchBackend
    from guardwire_server.adapters.registry import load_adapter
    from guardwire_tools.export_onnx import export_onnx
    from guardwire_tools.tiny_model import default_tokenizer_dir, make_test_model

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    tok_dir = default_tokenizer_dir()
    if tok_dir is None:
        print(
            "warning: shared/reference/tokenizers/llama3 not found; using the small trained "
            "tokenizer (vocabulary 4096, not 128k)",
            file=sys.stderr,
        )
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gw-bench-"))
    model_dir, onnx_dir = work / f"{args.shape}-hf", work / f"{args.shape}-onnx"
    t = time.perf_counter()
    if not (model_dir / "config.json").is_file():
        make_test_model(model_dir, tokenizer_dir=tok_dir, rigged=False, **SHAPES[args.shape])
    t_build = time.perf_counter() - t
    t = time.perf_counter()
    if not (onnx_dir / "guardwire-onnx.json").is_file():
        report = export_onnx(model_dir, onnx_dir, dtype="fp32")
        export_note = f"validated max |Δ| {report.max_abs_diff:.1e}"
    else:
        export_note = "reused"
    t_export = time.perf_counter() - t

    adapter = load_adapter(model_dir)
    items = [
        adapter.encode(c, adapter.default_policy).item
        for c in _conversations(args.requests, seed=0)
    ]
    prefix = len(items[0].prefix_ids)
    tails = [len(it.tail_ids) for it in items]

    backends: dict[str, Any] = {
        "PyTorch float32": TorchBackend.load(str(model_dir), device="cpu", dtype="float32"),
        ONNX: OnnxBackend.load(str(onnx_dir), device="cpu", threads=args.threads),
    }
    if args.torch_bf16:
        backends["PyTorch bfloat16"] = TorchBackend.load(
            str(model_dir), device="cpu", dtype="bfloat16"
        )
    results: dict[str, list[Any]] = {name: b.score(items[:4]) for name, b in backends.items()}
    ref = results["PyTorch float32"]
    diff = max(
        abs(a - b)
        for got in (results[ONNX],)
        for ra, rb in zip(ref, got, strict=True)
        for xa, xb in zip(ra.readouts, rb.readouts, strict=True)
        for a, b in zip(xa.logits, xb.logits, strict=True)
    )
    for b in backends.values():  # warm: every prefix cached, allocators primed
        b.score(items[: args.batch])

    modes = {"single": 1, f"batch {args.batch}": args.batch}
    runs: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for _ in range(args.rounds):
        for mode, size in modes.items():
            for name, b in backends.items():
                runs.setdefault((name, mode), []).append(_time_round(b.score, items, size))

    def med(name: str, mode: str, k: int) -> float:
        return statistics.median(r[k] for r in runs[(name, mode)])

    print()
    print(
        f"shape `{args.shape}` ({SHAPES[args.shape]}, vocab {backends[ONNX].info.vocab_size}), "
        f"{args.threads} threads, torch {torch.__version__}; prompts: LG3-1B default policy, "
        f"prefix {prefix} tokens (cached), tails {min(tails)}-{max(tails)} (median "
        f"{int(statistics.median(tails))}); {args.requests} requests x {args.rounds} rounds, "
        f"medians. ONNX vs torch fp32 max |Δ logit| on the bench prompts {diff:.1e}; "
        f"model build {t_build:.0f}s, export {t_export:.0f}s ({export_note})."
    )
    print()
    print(
        "| backend | mode | requests/s | p50 latency (ms) | p90 latency (ms) "
        "| ORT req/s ÷ this | this p50 ÷ ORT p50 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for mode in modes:
        ort_rps, ort_p50 = med(ONNX, mode, 0), med(ONNX, mode, 1)
        for name in backends:
            rps, p50, p90 = (med(name, mode, k) for k in range(3))
            r1, r2 = (
                ("—", "—") if name == ONNX else (f"{ort_rps / rps:.2f}", f"{p50 / ort_p50:.2f}")
            )
            print(f"| {name} | {mode} | {rps:.1f} | {p50:.1f} | {p90:.1f} | {r1} | {r2} |")
    print()
    print("latency = one score() call; in batch mode every request of the batch waits for it.")
    for b in backends.values():
        b.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
