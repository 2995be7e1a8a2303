"""The ``guardwire`` command: serve, classify, make-test-model (and the subcommands of other rooms).

Each subcommand's flags are documented in ``--help``; ``serve`` takes every option of
``guardwire_server.config`` as a flag, a ``GUARDWIRE_*`` variable or a YAML key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from guardwire_server.config import ConfigError, add_flags, load_config_file, resolve_settings

__all__ = ["main"]

log = logging.getLogger("guardwire")

DEMO_WARNING = """
############################################################################
#  DEMO MODE: serving a tiny RANDOM-WEIGHT model built on the fly.          #
#  It is NOT a safety model: its verdicts mean nothing. Never deploy it.    #
############################################################################"""


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from guardwire_server.app import serve

    config_path = args.config or os.environ.get("GUARDWIRE_CONFIG")
    try:
        file_data = load_config_file(config_path) if config_path else {}
        settings = resolve_settings(vars(args), os.environ, file_data)
    except ConfigError as exc:
        print(f"guardwire: configuration error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings.log_level)
    model_dir: Path | None = None
    if args.demo:
        from guardwire_tools.tiny_model import make_test_model

        print(DEMO_WARNING, file=sys.stderr)
        model_dir = Path(tempfile.mkdtemp(prefix="guardwire-demo-"))
        make_test_model(model_dir)
        log.warning("demo model written to %s (random weights, NOT a safety model)", model_dir)
    elif not settings.model:
        print(
            "guardwire: --model (or GUARDWIRE_MODEL, or model: in the config file) is "
            "required unless --demo",
            file=sys.stderr,
        )
        return 2
    log.info("settings: %s", settings.redacted())
    return asyncio.run(serve(settings, model_dir=model_dir))


def _load_conversation(args: argparse.Namespace) -> list[tuple[str, str]] | str:
    if args.file:
        data = json.loads(Path(args.file).read_text(encoding="utf-8"))
        turns = data["conversation"] if isinstance(data, dict) else data
        return [(t["role"], t["content"]) for t in turns]
    if args.text is None:
        raise SystemExit("guardwire classify: give TEXT or --file CONVERSATION.json")
    return args.text


def _cmd_classify(args: argparse.Namespace) -> int:
    from guardwire.client import GuardClient
    from guardwire.errors import GuardError

    conversation = _load_conversation(args)
    with GuardClient(args.target, timeout=args.timeout) as client:
        try:
            result = client.classify(
                conversation,
                role=args.role,
                threshold=args.threshold,
                include_category_scores=args.scores,
                excluded_codes=args.exclude or (),
                policy_id=args.policy,
            )
        except GuardError as exc:
            print(f"error: {exc}", file=sys.stderr)
            for v in exc.field_violations:
                print(f"  {v.field}: {v.description}", file=sys.stderr)
            return 3
    if args.json:
        print(json.dumps(result.__dict__, default=lambda o: o.__dict__, indent=2))
        return 0
    cats = ", ".join(f"{c.code} {c.name} ({c.score:.3f})" for c in result.categories)
    print(
        f"{result.verdict.upper()}  unsafe_score={result.unsafe_score:.4f} "
        f"threshold={result.threshold:.2f}" + (f"  categories: {cats}" if cats else "")
    )
    for c in result.category_scores:
        print(f"  {c.code:>4} {c.score:.4f} {c.name}")
    print(
        f"model={result.model_id} policy={result.policy_id} role={result.assessed_role} "
        f"batch={result.batch_size} inference={result.inference_s * 1000:.1f}ms "
        f"total={result.total_s * 1000:.1f}ms"
    )
    return 0


def _cmd_make_test_model(args: argparse.Namespace) -> int:
    from guardwire_tools.tiny_model import make_test_model

    out = Path(args.dir)
    make_test_model(
        out,
        tokenizer_dir=Path(args.tokenizer) if args.tokenizer else None,
        seed=args.seed,
        rigged=not args.unrigged,
    )
    print(f"wrote a tiny random-weight Llama Guard 3 test model to {out} (NOT a safety model)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="guardwire", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC guard sidecar")
    add_flags(serve)
    serve.add_argument(
        "--demo",
        action="store_true",
        help="serve a tiny random-weight test model (NOT a safety model)",
    )
    serve.set_defaults(func=_cmd_serve)

    classify = sub.add_parser("classify", help="classify a text or a conversation file")
    classify.add_argument("text", nargs="?", help="a user prompt to classify")
    classify.add_argument("--file", help="JSON conversation: [{role, content}, ...]")
    classify.add_argument("--target", default=os.environ.get("GUARDWIRE_TARGET", "127.0.0.1:50051"))
    classify.add_argument("--role", choices=("user", "assistant"))
    classify.add_argument("--threshold", type=float)
    classify.add_argument("--exclude", action="append", help="category code to exclude")
    classify.add_argument("--policy", help="named policy id")
    classify.add_argument("--scores", action="store_true", help="print every category's score")
    classify.add_argument("--json", action="store_true")
    classify.add_argument("--timeout", type=float, default=30.0)
    classify.set_defaults(func=_cmd_classify)

    tiny = sub.add_parser("make-test-model", help="write a tiny random Llama Guard 3 model dir")
    tiny.add_argument("dir")
    tiny.add_argument("--tokenizer", help="dir with tokenizer.json (default: built-in)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument(
        "--unrigged",
        action="store_true",
        help="plain random weights (fails the load probe, for tests)",
    )
    tiny.set_defaults(func=_cmd_make_test_model)

    for name, text in (
        ("eval", "evaluate a running sidecar on a labelled dataset"),
        ("calibrate", "fit per-category thresholds for a target FPR"),
        ("export-onnx", "export a guard model to an ONNX Runtime model dir"),
        ("bench", "benchmark the server against its baselines"),
    ):
        sub.add_parser(name, help=f"{text} (see `guardwire {name} --help`)", add_help=False)
    return parser


# Subcommands that own their argument parsing (their rooms define the flags).
_DELEGATED = {
    "eval": "guardwire_tools.evaluation.cli:eval_main",
    "calibrate": "guardwire_tools.evaluation.cli:calibrate_main",
    "export-onnx": "guardwire_tools.export_onnx:export_onnx_main",
    "bench": "guardwire_tools.bench.cli:main",
}


def _delegate(name: str, argv: Sequence[str]) -> int:
    import importlib

    module, func = _DELEGATED[name].split(":")
    return int(getattr(importlib.import_module(module), func)(list(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _DELEGATED:
        return _delegate(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
