"""``guardwire eval`` and ``guardwire calibrate``: argument parsing and orchestration only.

``eval_main(argv)`` and ``calibrate_main(argv)`` return a process exit status: 0 success,
1 the run was aborted (too many errors) or nothing could be scored, 2 bad arguments or data.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from guardwire_tools.evaluation import calibrate as cal
from guardwire_tools.evaluation import report as rep
from guardwire_tools.evaluation.datasets import (
    FORMATS,
    OPENAI_CATEGORIES,
    Dataset,
    DatasetError,
    load_dataset,
)
from guardwire_tools.evaluation.runner import EvalPolicy, EvalRun, ExampleResult, run_eval

__all__ = ["calibrate_main", "eval_main"]

ClientFactory = Callable[[str, float], Any]  # (target, timeout) -> async context manager client


def _add_common(p: argparse.ArgumentParser, *, need_target: bool) -> None:
    src = p.add_argument_group("server and data")
    src.add_argument(
        "--target",
        required=need_target,
        help="address of a running sidecar, host:port or unix:/path",
    )
    src.add_argument(
        "--dataset",
        required=need_target,
        help="dataset file (or the XSTest model_completions folder)",
    )
    src.add_argument(
        "--format",
        default="auto",
        choices=("auto", *FORMATS),
        help="dataset format (default: detected from the file)",
    )
    src.add_argument(
        "--limit", type=int, default=None, help="evaluate a stratified random sample of N examples"
    )
    src.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    src.add_argument(
        "--include-ambiguous",
        action="store_true",
        help="xstest-completions: keep partial refusals to unsafe prompts (as safe)",
    )
    pol = p.add_argument_group("policy")
    pol.add_argument("--policy-id", default=None, help="named policy configured on the server")
    pol.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="CODES",
        help="category codes to exclude (comma-separated, repeatable)",
    )
    pol.add_argument(
        "--categories",
        default=None,
        metavar="FILE|openai-moderation",
        help="custom (zero-shot) categories: a YAML/JSON list of {code, name, "
        "description}, or 'openai-moderation' for OpenAI's taxonomy as S1..S8",
    )
    pol.add_argument(
        "--threshold", type=float, default=None, help="threshold to request (default: the server's)"
    )
    run = p.add_argument_group("run")
    run.add_argument("--concurrency", type=int, default=8, help="calls in flight (default 8)")
    run.add_argument("--timeout", type=float, default=30.0, help="per-call deadline in seconds")
    run.add_argument(
        "--retries",
        type=int,
        default=2,
        help="retries of an overloaded/unavailable call (default 2)",
    )
    run.add_argument(
        "--max-errors",
        type=int,
        default=100,
        help="stop sending after this many failed examples (default 100; -1: never)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="guardwire eval",
        description="Measure a running guard sidecar on a labelled dataset: AUPRC, ROC AUC, "
        "precision/recall/F1/FPR at the served and best-F1 thresholds, per category.",
    )
    _add_common(p, need_target=True)
    p.add_argument(
        "--out",
        default="eval-report",
        help="output folder for report.json, report.md, pr_curve.png, "
        "predictions.jsonl (default ./eval-report)",
    )
    p.add_argument(
        "--test-model",
        choices=("auto", "yes", "no"),
        default="auto",
        help="label the report as a test-model run (default: guessed from the model)",
    )
    return p


def _calibrate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="guardwire calibrate",
        description="Fit per-category thresholds for a target false-positive rate and write them "
        "as a thresholds YAML file (rule: top-category; see docs/evaluation.md).",
    )
    _add_common(p, need_target=False)
    p.add_argument(
        "--predictions",
        default=None,
        metavar="DIR|FILE",
        help="reuse an eval run (its folder or predictions.jsonl) instead of --target/--dataset",
    )
    p.add_argument("--target-fpr", type=float, required=True, help="e.g. 0.05")
    p.add_argument(
        "--min-negatives",
        type=int,
        default=20,
        help="fewest safe examples for a category to get its own threshold",
    )
    p.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        help="fraction of examples kept out of the fit to measure the thresholds on",
    )
    p.add_argument("--out", required=True, help="thresholds file to write, e.g. policy.yaml")
    p.add_argument("--report-dir", default=None, help="also write the eval report here")
    return p


def _load_categories(spec: str) -> tuple[tuple[str, str, str], ...]:
    if spec == "openai-moderation":
        return tuple(OPENAI_CATEGORIES.values())
    data = yaml.safe_load(Path(spec).read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = data.get("categories")
    if not isinstance(data, list) or not data:
        raise DatasetError(f"{spec}: expected a list of categories (or a 'categories' key)")
    out = []
    for i, c in enumerate(data):
        if not isinstance(c, dict) or not c.get("code") or not c.get("name"):
            raise DatasetError(f"{spec}: categories[{i}] needs 'code' and 'name'")
        out.append((str(c["code"]), str(c["name"]), str(c.get("description", ""))))
    return tuple(out)


def _policy(args: argparse.Namespace) -> EvalPolicy:
    excluded = tuple(c.strip() for spec in args.exclude for c in spec.split(",") if c.strip())
    return EvalPolicy(
        policy_id=args.policy_id,
        categories=_load_categories(args.categories) if args.categories else None,
        excluded_codes=excluded,
        threshold=args.threshold,
    )


def _dataset(args: argparse.Namespace) -> Dataset:
    taxonomy = "openai" if args.categories == "openai-moderation" else "llama-guard-3"
    return load_dataset(
        args.dataset,
        args.format,
        limit=args.limit,
        seed=args.seed,
        taxonomy=taxonomy,
        include_ambiguous=args.include_ambiguous,
    )


async def _run(
    args: argparse.Namespace, ds: Dataset, policy: EvalPolicy, factory: ClientFactory | None
) -> EvalRun:
    kw: dict[str, Any] = {
        "concurrency": args.concurrency,
        "policy": policy,
        "timeout": args.timeout,
        "progress": not args.no_progress,
        "retries": args.retries,
        "max_errors": None if args.max_errors < 0 else args.max_errors,
    }
    if factory is None:
        return await run_eval(args.target, ds.examples, **kw)
    async with factory(args.target, args.timeout) as client:
        run = await run_eval(client, ds.examples, **kw)
    run.target = args.target
    return run


def _summary_line(report: dict[str, Any]) -> str:
    o = report["overall"]
    c = report["counts"]
    s = o.get("at_served_threshold") or {}
    tag = "[TEST MODEL] " if report.get("test_model") else ""
    f = rep.fmt
    return (
        f"{tag}{report['dataset']['format']}: scored {c['scored']}/{c['selected']} "
        f"(errors {c['errors']}, not run {c['not_run']}); AUPRC {f(o['auprc'])}, "
        f"ROC AUC {f(o['roc_auc'])}; at t={f(s.get('threshold'))}: P {f(s.get('precision'))} "
        f"R {f(s.get('recall'))} F1 {f(s.get('f1'))} FPR {f(s.get('fpr'))}"
    )


def _write_eval(run: EvalRun, ds: Dataset, out: str, test_model: bool | None) -> dict[str, Any]:
    return rep.write_report(
        run,
        ds.summary(),
        out,
        category_codes=ds.category_codes,
        category_names=ds.category_names,
        test_model=test_model,
    )


def eval_main(
    argv: Sequence[str] | None = None, *, client_factory: ClientFactory | None = None
) -> int:
    """``guardwire eval``. ``client_factory`` replaces the real client (tests)."""
    args = _eval_parser().parse_args(argv)
    try:
        policy = _policy(args)
        ds = _dataset(args)
    except (DatasetError, OSError) as exc:
        print(f"guardwire eval: {exc}", file=sys.stderr)
        return 2
    run = asyncio.run(_run(args, ds, policy, client_factory))
    test_model = {"auto": None, "yes": True, "no": False}[args.test_model]
    report = _write_eval(run, ds, args.out, test_model)
    if report.get("test_model"):
        print(f"WARNING: {rep.TEST_MODEL_BANNER}", file=sys.stderr)
    print(_summary_line(report))
    if report["errors"]["by_reason"]:
        print(f"errors by reason: {report['errors']['by_reason']}")
    print(f"report: {Path(args.out) / 'report.md'}")
    if run.aborted:
        print(f"guardwire eval: aborted: {run.aborted}", file=sys.stderr)
        return 1
    return 0 if run.scored else 1


def _read_predictions(spec: str) -> tuple[list[ExampleResult], dict[str, Any]]:
    p = Path(spec)
    file = p / "predictions.jsonl" if p.is_dir() else p
    meta: dict[str, Any] = {}
    report_json = file.parent / "report.json"
    if report_json.exists():
        r = json.loads(report_json.read_text(encoding="utf-8"))
        meta = {k: r.get(k) for k in ("model_id", "policy_id", "policy", "dataset", "test_model")}
    rows = [
        ExampleResult.from_json(json.loads(line))
        for line in file.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    return rows, meta


def calibrate_main(
    argv: Sequence[str] | None = None, *, client_factory: ClientFactory | None = None
) -> int:
    """``guardwire calibrate``. ``client_factory`` replaces the real client (tests)."""
    parser = _calibrate_parser()
    args = parser.parse_args(argv)
    if args.predictions is None and (args.target is None or args.dataset is None):
        parser.error("give --target and --dataset, or --predictions")
    try:
        if args.predictions is not None:
            results, meta = _read_predictions(args.predictions)
            aborted = None
        else:
            policy = _policy(args)
            ds = _dataset(args)
            run = asyncio.run(_run(args, ds, policy, client_factory))
            if args.report_dir:
                _write_eval(run, ds, args.report_dir, None)
            results, aborted = run.results, run.aborted
            meta = {
                "model_id": run.model_id,
                "policy_id": run.policy_id,
                "policy": policy.describe(),
                "dataset": ds.summary(),
                "test_model": rep.is_test_model(run.model_id, run.model_info),
            }
    except (DatasetError, OSError, ValueError) as exc:
        print(f"guardwire calibrate: {exc}", file=sys.stderr)
        return 2
    errors = sum(not r.ok for r in results)
    if aborted:
        print(f"guardwire calibrate: aborted: {aborted}; no thresholds written", file=sys.stderr)
        return 1
    fit, hold = (
        cal.split_holdout(results, args.holdout, args.seed) if args.holdout > 0 else (results, [])
    )
    try:
        policy_fit = cal.calibrate(fit, args.target_fpr, min_negatives=args.min_negatives)
    except ValueError as exc:
        print(f"guardwire calibrate: {exc}", file=sys.stderr)
        return 1
    md: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **meta,
        "examples_with_errors": errors,
        **policy_fit.metadata,
    }
    if meta.get("test_model"):
        md["warning"] = rep.TEST_MODEL_BANNER
    if hold:
        md["holdout"] = {
            "fraction": args.holdout,
            "seed": args.seed,
            "examples": len(hold),
            **cal.evaluate_thresholds(hold, policy_fit)["overall"],
        }
    cal.write_thresholds(cal.ThresholdPolicy(policy_fit.thresholds, cal.RULE, md), args.out)
    o = md["calibration"]["per_category"]
    tag = "[TEST MODEL] " if meta.get("test_model") else ""
    print(
        f"{tag}wrote {args.out}: {len(policy_fit.thresholds) - 1} category thresholds + default "
        f"{policy_fit.thresholds['default']:.4f}; on the fit data FPR {rep.fmt(o['fpr'])} "
        f"recall {rep.fmt(o['recall'])} (target FPR {args.target_fpr})"
    )
    if hold:
        h = md["holdout"]
        print(
            f"holdout ({h['examples']} examples): FPR {rep.fmt(h['fpr'])} "
            f"recall {rep.fmt(h['recall'])}"
        )
    if errors:
        print(f"note: {errors} examples failed and were left out of the fit", file=sys.stderr)
    return 0
