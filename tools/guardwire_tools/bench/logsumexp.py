"""The full-vocabulary log-sum-exp of a bf16 lm_head, two ways, side by side in one run.

``python bench/logsumexp.py [--vocab 128256 --hidden 2048 --rows 2,16 --threads 2]``

1. *upcast*: the weight upcast to fp32 in 16k-row slices, fp32 matmul (what the torch backend did
   before): exact, but it converts the whole weight on every batch.
2. *backend*: ``TorchBackend._logsumexp`` -- a bf16 matmul, the top-64 logits of each row
   recomputed in fp32 (what it does now).

Prints the time per call and the error of each against an fp64 reference. Random weights and
hidden states of the Llama Guard 3 1B lm_head's shape; speed does not depend on the values.
"""

from __future__ import annotations

import argparse
import time
import types

import torch

from guardwire_backends.torch_hf import TorchBackend


def upcast_in_slices(h: torch.Tensor, w: torch.Tensor, step: int = 16384) -> torch.Tensor:
    hf = h.float()
    parts = [torch.logsumexp(hf @ w[s : s + step].float().T, -1) for s in range(0, len(w), step)]
    return torch.logsumexp(torch.stack(parts, -1), -1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int, default=128256)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--rows", default="2,16", help="read-out rows per batch (comma-separated)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    w = (torch.randn(args.vocab, args.hidden) * 0.02).to(torch.bfloat16)
    backend = types.SimpleNamespace(_head_w=w, _head_b=None, _softcap=None)
    print(f"lm_head {args.vocab} x {args.hidden} bf16, {args.threads} threads")
    for rows in (int(r) for r in args.rows.split(",")):
        h = (torch.randn(rows, args.hidden) * 3).to(torch.bfloat16)
        ref = torch.logsumexp(h.double() @ w.double().T, -1)
        timings = {}
        for name, fn in (
            ("upcast", lambda h=h: upcast_in_slices(h, w)),
            ("backend", lambda h=h: TorchBackend._logsumexp(backend, h)),  # type: ignore[arg-type]
        ):
            fn()
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                out = fn()
            timings[name] = (time.perf_counter() - t0) / args.repeats
            err = (out.double() - ref).abs().max().item()
            print(f"rows {rows:3d}  {name:8s} {timings[name] * 1e3:8.1f} ms  max|Δ| {err:.1e}")
        print(f"rows {rows:3d}  upcast ÷ backend: {timings['upcast'] / timings['backend']:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
