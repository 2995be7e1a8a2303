"""Turns an :class:`~guardwire_tools.evaluation.runner.EvalRun` into a JSON report, a markdown
report, a
precision-recall plot and a per-example predictions file.

``build_report`` is pure (a dict, no I/O); ``write_report`` writes into a folder::

    report.json        every number below, machine-readable (nan written as null)
    report.md          the same for humans, with the published Llama Guard figures for the set
    pr_curve.png       precision-recall curve (matplotlib, Agg); skipped with a note if missing
    predictions.jsonl  one line per example: id, labels, scores, verdict or error (no text)

Runs against a test model (random weights, ``--demo``) carry a banner in every file: their numbers
measure the plumbing, not safety.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from guardwire_tools.evaluation import metrics
from guardwire_tools.evaluation.runner import EvalRun, ExampleResult

__all__ = [
    "PUBLISHED",
    "TEST_MODEL_BANNER",
    "build_report",
    "fmt",
    "is_test_model",
    "render_markdown",
    "write_pr_curve",
    "write_report",
]

REPORT_VERSION = 1
TEST_MODEL_BANNER = (
    "TEST MODEL - NOT A SAFETY MODEL. These numbers come from a random-weight test model; they "
    "check the evaluation pipeline end to end and say nothing about safety. Do not compare them "
    "with published figures."
)
_TEST_MODEL_RE = re.compile(r"(demo|test|tiny|random|fake|dummy|toy)", re.IGNORECASE)

#: Published Llama Guard figures per dataset format, from
#: ../shared/reference/published-results.md.
PUBLISHED: dict[str, dict[str, Any]] = {
    "openai-moderation": {
        "caveat": "Out-of-policy: OpenAI's taxonomy differs from Llama Guard's. LG1's AUPRC uses "
        "zero-shot prompting with OpenAI's categories (`--categories openai-moderation`); LG2's "
        "F1/FPR use the default policy at threshold 0.5. Binary labels: any flag = unsafe.",
        "rows": [
            (
                "Llama Guard 1 (7B), zero-shot OpenAI categories",
                "AUPRC",
                "0.847",
                "LG1 paper Table 2 / card",
            ),
            (
                "Llama Guard 1, own taxonomy (no adaptation)",
                "AUPRC",
                "0.837",
                "LG1 paper Table 4 (secondary source)",
            ),
            (
                "Llama Guard 2 (8B), default policy, t=0.5",
                "F1 / FPR",
                "0.807 / 0.060",
                "LG2 card Table 3",
            ),
            ("OpenAI Moderation API", "AUPRC", "0.856", "LG1 paper Table 2"),
        ],
    },
    "xstest": {
        "caveat": "Meta does not say whether it classified the prompts or prompt+response pairs; "
        "our reading is the prompts (this format). Default policy, threshold 0.5.",
        "rows": [
            ("Llama Guard 2 (8B)", "F1 / FPR", "0.884 / 0.084", "LG2 card Table 3"),
            ("Llama Guard 3-8B", "F1 / FPR", "0.884 / 0.044", "LG3-1B card"),
            ("Llama Guard 3-1B", "F1 / FPR", "0.821 / 0.068", "LG3-1B card"),
            ("Llama Guard 3-1B-INT4", "F1 / FPR", "0.737 / 0.152", "LG3-1B card"),
        ],
    },
    "xstest-completions": {
        "caveat": "No published Llama Guard figure uses this response-harm view of the XSTest "
        "completions (our derivation: unsafe prompt + full compliance). Smoke test only.",
        "rows": [],
    },
}


def is_test_model(model_id: str, model_info: Mapping[str, Any] | None = None) -> bool:
    """Heuristic: ids naming demo/test/tiny/random/fake models, or the fake backend."""
    info = model_info or {}
    if str(info.get("backend", "")).lower() == "fake":
        return True
    return bool(_TEST_MODEL_RE.search(model_id or "")) or bool(
        _TEST_MODEL_RE.search(str(info.get("family", "")))
    )


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.floating):
        return _clean(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _block(
    labels: Sequence[bool],
    scores: Sequence[float],
    served_predictions: Sequence[bool],
    served_threshold: float | None,
) -> dict[str, Any]:
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    out: dict[str, Any] = {
        "n": int(y.size),
        "positives": n_pos,
        "negatives": int(y.size - n_pos),
    }
    if y.size == 0:
        out.update(auprc=math.nan, roc_auc=math.nan, at_served_threshold=None, at_best_f1=None)
        return out
    out["auprc"] = metrics.average_precision(y, s)
    out["roc_auc"] = metrics.roc_auc(y, s)
    out["at_served_threshold"] = metrics.at_predictions(
        y, served_predictions, math.nan if served_threshold is None else served_threshold
    ).as_dict()
    out["at_best_f1"] = metrics.best_f1(y, s).as_dict()
    return out


def _per_category(
    scored: Sequence[ExampleResult],
    codes: Sequence[str],
    names: Mapping[str, str],
    served_threshold: float | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for code in codes:
        rows = [r for r in scored if r.category_known(code)]
        served_codes = any(code in r.category_scores for r in scored)
        entry: dict[str, Any] = {"name": names.get(code, "")}
        if not served_codes:
            entry.update(
                n=len(rows),
                positives=sum(code in r.categories for r in rows),
                note="the served policy returned no score for this code",
            )
        else:
            entry.update(
                _block(
                    [code in r.categories for r in rows],
                    [r.category_scores.get(code, 0.0) for r in rows],
                    [code in r.violated for r in rows],
                    served_threshold,
                )
            )
            entry["note"] = "served = code listed as violated; best-F1 on the category score"
        out[code] = entry
    return out


def _by_tag(scored: Sequence[ExampleResult]) -> dict[str, Any]:
    groups: dict[str, dict[str, list[ExampleResult]]] = {}
    for r in scored:
        for k, v in r.tags.items():
            groups.setdefault(k, {}).setdefault(v, []).append(r)
    out: dict[str, Any] = {}
    for key, values in sorted(groups.items()):
        if len(values) > 50:  # free-text tags are not useful as a table
            continue
        table: dict[str, Any] = {}
        for value, rows in sorted(values.items()):
            flagged = sum(r.verdict == "unsafe" for r in rows)
            table[value] = {
                "n": len(rows),
                "unsafe_labels": sum(r.unsafe for r in rows),
                "flagged": flagged,
                "flag_rate": flagged / len(rows),
                "mean_score": float(np.mean([r.unsafe_score or 0.0 for r in rows])),
            }
        out[key] = table
    return out


def build_report(
    run: EvalRun,
    dataset: Mapping[str, Any],
    *,
    category_codes: Sequence[str] = (),
    category_names: Mapping[str, str] | None = None,
    test_model: bool | None = None,
    max_error_examples: int = 20,
) -> dict[str, Any]:
    """The report as a dict. ``dataset`` is :meth:`Dataset.summary`; nan stays nan here."""
    scored = run.scored
    thr = run.served_threshold
    labels = [r.unsafe for r in scored]
    scores = [float(r.unsafe_score or 0.0) for r in scored]
    served = [r.verdict == "unsafe" for r in scored]
    mismatches = sum(
        (s >= r.threshold) != p
        for r, s, p in zip(scored, scores, served, strict=True)
        if r.threshold is not None
    )
    thresholds_seen = sorted({r.threshold for r in scored if r.threshold is not None})
    names = dict(category_names or {})
    # the server's names win; templates end them with "." ("Hate."), tables do not need it
    names.update({k: v.strip().removesuffix(".") for k, v in run.category_names.items() if v})
    test = is_test_model(run.model_id, run.model_info) if test_model is None else test_model
    counts = run.counts()
    ds_format = str(dataset.get("format", ""))
    return {
        "report_version": REPORT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "test_model": test,
        "banner": TEST_MODEL_BANNER if test else None,
        "model_id": run.model_id,
        "model_info": dict(run.model_info),
        "policy_id": run.policy_id,
        "policy": run.policy.describe(),
        "target": run.target,
        "concurrency": run.concurrency,
        "elapsed_s": run.elapsed_s,
        "examples_per_s": counts["scored"] / run.elapsed_s if run.elapsed_s > 0 else None,
        "dataset": dict(dataset),
        "counts": counts,
        "aborted": run.aborted,
        "errors": {
            "by_reason": run.errors_by_reason(),
            "examples": [
                {"id": r.id, "reason": r.error_reason, "message": r.error_message}
                for r in run.errors[:max_error_examples]
            ],
        },
        "served_threshold": thr,
        "thresholds_seen": thresholds_seen,
        "verdict_score_mismatches": mismatches,
        "overall": _block(labels, scores, served, thr),
        "per_category": _per_category(scored, category_codes, names, thr),
        "by_tag": _by_tag(scored),
        "published": PUBLISHED.get(ds_format),
    }


# --- markdown ---------------------------------------------------------------------------------


def fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return "n/a" if math.isnan(x) else f"{x:.{nd}f}"
    return str(x)


def _tm_row(name: str, m: Mapping[str, Any] | None) -> str:
    if not m:
        return f"| {name} | n/a | | | | | | | | |"
    return (
        f"| {name} | {fmt(m['threshold'], 4)} | {fmt(m['precision'])} | {fmt(m['recall'])} | "
        f"{fmt(m['f1'])} | {fmt(m['fpr'])} | {m['tp']} | {m['fp']} | {m['tn']} | {m['fn']} |"
    )


def render_markdown(report: Mapping[str, Any], *, plot_name: str | None = "pr_curve.png") -> str:
    """Markdown for humans; every number comes from ``report``."""
    r = report
    ds = r["dataset"]
    c = r["counts"]
    info = r.get("model_info") or {}
    lines: list[str] = ["# Guardwire evaluation report", ""]
    if r.get("test_model"):
        lines += [f"> **{TEST_MODEL_BANNER}**", ""]
    model_bits = ", ".join(
        f"{k} {info[k]}" for k in ("family", "backend", "device", "dtype") if info.get(k)
    )
    policy = r["policy"]
    pol = r["policy_id"] or "(none reported)"
    if policy.get("policy_id"):
        pol += f" (named policy `{policy['policy_id']}`)"
    if policy.get("custom_categories"):
        pol += f" (custom: {', '.join(c[0] + ' ' + c[1] for c in policy['custom_categories'])})"
    if policy.get("excluded_codes"):
        pol += f" (excluded {', '.join(policy['excluded_codes'])})"
    if ds.get("limit") is None or ds["selected"] >= ds["examples_in_file"]:
        sample = f"all {ds['examples_in_file']} examples"
    else:
        sample = (
            f"{ds['selected']} of {ds['examples_in_file']} (stratified by label, seed {ds['seed']})"
        )
    skipped = ", ".join(f"{k}: {v}" for k, v in ds.get("skipped", {}).items()) or "none"
    lines += [
        "| | |",
        "| --- | --- |",
        f"| dataset | `{ds['path']}` ({ds['format']}), sha256 `{ds['sha256'][:12]}` |",
        f"| labels | {ds['label_view']} |",
        f"| sample | {sample}; skipped while reading: {skipped} |",
        f"| model | `{r['model_id'] or '?'}`{' (' + model_bits + ')' if model_bits else ''} |",
        f"| policy | {pol} |",
        f"| target | `{r['target']}`, concurrency {r['concurrency']} |",
        f"| examples | {c['selected']} selected = {c['scored']} scored "
        f"({c['scored_unsafe']} unsafe / {c['scored_safe']} safe) + {c['errors']} errors + "
        f"{c['not_run']} not run |",
        f"| time | {r['elapsed_s']:.1f} s ({fmt(r['examples_per_s'], 1)} examples/s) |",
        "",
    ]
    if r.get("aborted"):
        lines += [f"**Run aborted: {r['aborted']}; {c['not_run']} examples were not sent.**", ""]
    o = r["overall"]
    lines += [
        "## Overall (unsafe score)",
        "",
        f"AUPRC **{fmt(o['auprc'])}**, ROC AUC **{fmt(o['roc_auc'])}** "
        f"({o['positives']} positives, {o['negatives']} negatives).",
        "",
        "| threshold | value | precision | recall | F1 | FPR | TP | FP | TN | FN |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        _tm_row("served (server's verdicts)", o.get("at_served_threshold")),
        _tm_row("best F1 (on this data)", o.get("at_best_f1")),
        "",
        "The best-F1 threshold is fit on the evaluated examples themselves, so its row is an "
        "optimistic bound; served = the verdicts the server returned.",
        "",
    ]
    if len(r.get("thresholds_seen", [])) > 1:
        lines += [f"Note: the server applied several thresholds: {r['thresholds_seen']}.", ""]
    if r.get("verdict_score_mismatches"):
        lines += [
            f"Note: {r['verdict_score_mismatches']} verdicts disagree with "
            "`score >= threshold` (float32 rounding at the boundary?).",
            "",
        ]
    errs = r["errors"]
    lines += ["## Errors", ""]
    if not errs["by_reason"]:
        lines += ["None: every example sent was scored.", ""]
    else:
        lines += ["| reason | count |", "| --- | ---: |"]
        lines += [f"| {k} | {v} |" for k, v in errs["by_reason"].items()]
        lines += (
            [""]
            + [f"- `{e['id']}`: {e['reason']}: {e['message']}" for e in errs["examples"]]
            + [""]
        )
    pc = r.get("per_category") or {}
    if pc:
        lines += [
            "## Per category (category score; served = code listed as violated)",
            "",
            "| code | name | pos | neg | AUPRC | ROC AUC | P served | R served | F1 served | "
            "FPR served | best F1 (t) |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for code, e in pc.items():
            if "auprc" not in e:
                lines.append(
                    f"| {code} | {e['name']} | {e['positives']} | | {e['note']} | | | | | | |"
                )
                continue
            s = e.get("at_served_threshold") or {}
            b = e.get("at_best_f1") or {}
            lines.append(
                f"| {code} | {e['name']} | {e['positives']} | {e['negatives']} | "
                f"{fmt(e['auprc'])} | {fmt(e['roc_auc'])} | {fmt(s.get('precision'))} | "
                f"{fmt(s.get('recall'))} | {fmt(s.get('f1'))} | {fmt(s.get('fpr'))} | "
                f"{fmt(b.get('f1'))} ({fmt(b.get('threshold'), 4)}) |"
            )
        lines.append("")
    for key, table in (r.get("by_tag") or {}).items():
        lines += [
            f"## By `{key}`",
            "",
            "| value | n | unsafe labels | flagged | flag rate | mean score |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {v} | {t['n']} | {t['unsafe_labels']} | {t['flagged']} | {fmt(t['flag_rate'])} | "
            f"{fmt(t['mean_score'])} |"
            for v, t in table.items()
        ]
        lines.append("")
    pub = r.get("published")
    if pub:
        lines += ["## Published Llama Guard figures on this dataset", ""]
        if r.get("test_model"):
            lines += ["*For orientation only: this run used a test model.*", ""]
        if pub["rows"]:
            lines += ["| model / setting | metric | value | source |", "| --- | --- | ---: | --- |"]
            lines += [f"| {a} | {b} | {v} | {s} |" for a, b, v, s in pub["rows"]]
            lines.append("")
        lines += [pub["caveat"], ""]
    if plot_name:
        lines += [f"![precision-recall curve]({plot_name})", ""]
    return "\n".join(lines)


# --- plot and files ---------------------------------------------------------------------------


def write_pr_curve(run: EvalRun, report: Mapping[str, Any], path: Path) -> str | None:
    """Writes the PR curve PNG; returns None on success or a note why no plot was made."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'guardwire[eval]'): no plot"
    scored = run.scored
    y = np.asarray([r.unsafe for r in scored], dtype=bool)
    if y.size == 0 or not y.any():
        return "no scored positive example: no precision-recall curve"
    s = np.asarray([r.unsafe_score or 0.0 for r in scored], dtype=np.float64)
    precision, recall, _ = metrics.precision_recall_curve(y, s)
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    try:
        o = report["overall"]
        ax.step(recall, precision, where="post", label=f"overall (AUPRC {fmt(o['auprc'])})")
        for key, marker in (("at_served_threshold", "o"), ("at_best_f1", "s")):
            m = o.get(key)
            if m:
                ax.plot(
                    [m["recall"]],
                    [m["precision"]],
                    marker,
                    markersize=8,
                    label=f"{key.replace('at_', '').replace('_', ' ')} "
                    f"t={fmt(m['threshold'], 3)} F1={fmt(m['f1'])}",
                )
        ax.axhline(
            y.mean(), color="grey", linestyle=":", linewidth=1, label=f"chance ({y.mean():.2f})"
        )
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1.01)
        ax.set_ylim(0, 1.05)
        title = f"{report['dataset']['format']} · {report['model_id'] or '?'}"
        if report.get("test_model"):
            title = "TEST MODEL (not a safety model)\n" + title
            ax.text(
                0.5,
                0.5,
                "TEST MODEL",
                transform=ax.transAxes,
                fontsize=40,
                alpha=0.12,
                ha="center",
                va="center",
                rotation=20,
                color="red",
            )
        ax.set_title(title, fontsize=10)
        ax.legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return None


def write_report(
    run: EvalRun,
    dataset: Mapping[str, Any],
    out_dir: str | Path,
    *,
    category_codes: Sequence[str] = (),
    category_names: Mapping[str, str] | None = None,
    test_model: bool | None = None,
    plot: bool = True,
) -> dict[str, Any]:
    """Writes report.json, report.md, pr_curve.png and predictions.jsonl; returns the report."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(
        run,
        dataset,
        category_codes=category_codes,
        category_names=category_names,
        test_model=test_model,
    )
    note = write_pr_curve(run, report, out / "pr_curve.png") if plot else "plot disabled"
    report["plot"] = None if note else "pr_curve.png"
    report["plot_note"] = note
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as f:
        for r in run.results:
            f.write(json.dumps(_clean(r.as_json()), ensure_ascii=False) + "\n")
    (out / "report.json").write_text(
        json.dumps(_clean(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n",
        encoding="utf-8",
    )
    md = render_markdown(report, plot_name=report["plot"])
    if note:
        md += f"\n_{note}_\n"
    (out / "report.md").write_text(md, encoding="utf-8")
    return report
