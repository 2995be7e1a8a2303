"""Subprocess entry points of the bench: ``build`` (a shape's model dir) and ``baselines``.

Heavy work runs in its own process so the driver (the gRPC load generator) stays small and
every configuration's memory is its own. Results come back as JSON files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m guardwire_tools.bench.worker")
    sub = parser.add_subparsers(dest="cmd", required=True)
    build = sub.add_parser("build")
    build.add_argument("--shape", required=True)
    build.add_argument("--cache", required=True)
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--rebuild", action="store_true")
    build.add_argument("--out", required=True, help="JSON file: {model_dir}")
    base = sub.add_parser("baselines")
    base.add_argument("--model-dir", required=True)
    base.add_argument("--conversations", required=True, help="JSON list of [[role, text], ...]")
    base.add_argument("--out", required=True)
    base.add_argument("--device", default="cpu")
    base.add_argument("--dtype", default="bfloat16")
    base.add_argument("--threads", type=int, default=0)
    base.add_argument("--max-batch-size", type=int, default=16)
    base.add_argument("--max-batch-tokens", type=int, default=8192)
    base.add_argument("--configs", default="moderate,batched_no_prefix,floor")
    args = parser.parse_args(argv)

    if args.cmd == "build":
        from guardwire_tools.bench.shapes import SHAPES, model_dir_for

        model_dir = model_dir_for(
            SHAPES[args.shape], Path(args.cache), seed=args.seed, rebuild=args.rebuild
        )
        Path(args.out).write_text(json.dumps({"model_dir": str(model_dir)}))
        return 0

    from guardwire_tools.bench.baselines import run_baselines

    conversations = [
        [(role, text) for role, text in c]
        for c in json.loads(Path(args.conversations).read_text(encoding="utf-8"))
    ]
    result = run_baselines(
        Path(args.model_dir),
        conversations,
        device=args.device,
        dtype=args.dtype,
        threads=args.threads,
        max_batch_size=args.max_batch_size,
        max_batch_tokens=args.max_batch_tokens,
        configs=[c for c in args.configs.split(",") if c],
        log=_log,
    )
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
