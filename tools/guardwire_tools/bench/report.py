"""Tables (markdown), the latency-vs-load plot (PNG) and the queue replay of the baselines."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["fifo_replay", "markdown", "percentile", "plot"]


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def fifo_replay(
    service_s: Sequence[float], rate: float, *, arrivals: int = 5000, seed: int = 0
) -> list[float]:
    """Latencies of a one-at-a-time FIFO server (the ``moderate()`` loop behind a queue) under
    Poisson arrivals at ``rate``, replaying the measured service times in order (cycling)."""
    rng = random.Random(seed)
    t = free = 0.0
    out = []
    for n in range(arrivals):
        t += rng.expovariate(rate)
        start = max(t, free)
        free = start + service_s[n % len(service_s)]
        out.append(free - t)
    return out


def _ms(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v * 1e3:,.0f}" if v >= 1.0 else f"{v * 1e3:,.1f}"


def _mb(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}"


def _rps(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:,.2f}" if v < 100 else f"{v:,.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if not a or not b else f"{a / b:.2f}×"


def _lat(row: dict[str, Any], load: str) -> str:
    p = row.get("latency", {}).get(load)
    if not p:
        return "—"
    return f"{_ms(p['p50'])} / {_ms(p['p99'])}"


def markdown(results: dict[str, Any]) -> str:
    """The report: machine and settings, the side-by-side table, ratios, serving overhead."""
    meta = results["meta"]
    rows = results["rows"]
    fractions = meta["load_fractions"]
    lines = [
        f"### Shape `{meta['shape']}` — {meta['date']}",
        "",
        f"- Machine: {meta['cpu']} ({meta['cores']} cores), {meta['memory_gb']} GiB RAM; "
        f"torch {meta['torch']}, transformers {meta['transformers']}, Python {meta['python']}",
        f"- Model: {meta['shape_note']}; {meta['params_m']:.1f} M params, {meta['dtype']} on "
        f"{meta['device']}, threads {meta['threads'] or 'default'}; tokenizer {meta['tokenizer']}",
        f"- Requests: {meta['workload']}; working set {meta['requests']} "
        f"(prefix {meta['tokens']['prefix']} tokens, tail mean {meta['tokens']['tail_mean']:.0f}"
        f" / max {meta['tokens']['tail_max']}, full prompt mean "
        f"{meta['tokens']['total_mean']:.0f} tokens)",
        f"- Server: `{meta['server_args']}`; {meta['concurrency']} concurrent callers at "
        f"saturation; open-loop Poisson phases of {meta['duration_s']:g} s",
        f"- Command: `{meta['command']}`",
        "",
        "| # | configuration | req/s at saturation | "
        + " | ".join(f"p50 / p99 ms at {f:.0%} load" for f in fractions)
        + " | peak RSS MiB | notes |",
        "|---|---|---:|" + "---:|" * len(fractions) + "---:|---|",
    ]
    for row in rows:
        lats = " | ".join(_lat(row, f"{f:g}") for f in fractions)
        lines.append(
            f"| {row['n']} | {row['label']} | {_rps(row.get('rps'))} | {lats} | "
            f"{_mb(row.get('peak_rss_mb'))} | {row.get('note', '')} |"
        )
    by = {r["key"]: r for r in rows}
    server, moderate, floor = by.get("server", {}), by.get("moderate", {}), by.get("floor", {})
    unloaded = server.get("unloaded")
    lines += ["", "| figure | value |", "|---|---:|"]
    lines.append(
        f"| server ÷ moderate() loop (3 ÷ 1), req/s | "
        f"{_ratio(server.get('rps'), moderate.get('rps'))} |"
    )
    lines.append(
        f"| server ÷ compute floor (3 ÷ 4), req/s | {_ratio(server.get('rps'), floor.get('rps'))} |"
    )
    if "batched_no_prefix" in by:
        lines.append(
            f"| server ÷ batched without prefix cache (3 ÷ 2), req/s | "
            f"{_ratio(server.get('rps'), by['batched_no_prefix'].get('rps'))} |"
        )
    if unloaded:
        lines.append(
            f"| server unloaded single-request latency p50 / p99 ms | "
            f"{_ms(unloaded['p50'])} / {_ms(unloaded['p99'])} |"
        )
        half = server.get("latency", {}).get(f"{fractions[0]:g}")
        if half:
            lines.append(
                f"| server p99 at {fractions[0]:.0%} load ÷ unloaded p50 (÷ unloaded p99) | "
                f"{_ratio(half['p99'], unloaded['p50'])} "
                f"({_ratio(half['p99'], unloaded['p99'])}) |"
            )
    if server.get("mean_batch"):
        lines.append(f"| server mean batch size at saturation | {server['mean_batch']:.1f} |")
    overhead = results.get("overhead")
    if overhead:
        lines += [
            "",
            f"Serving overhead (fake backend: gRPC + validation + tokenization + batching, "
            f"{overhead['concurrency']} concurrent callers on {overhead['channels']} channels, "
            f"{overhead['duration_s']:g} s, client in the same machine): "
            f"**{overhead['rps']:,.0f} req/s**, p50 {_ms(overhead['p50'])} ms, "
            f"p99 {_ms(overhead['p99'])} ms, mean batch {overhead['mean_batch']:.1f}, "
            f"errors {overhead['errors'] or 'none'}.",
        ]
        if overhead.get("server_cpu_ms"):
            ms = overhead["server_cpu_ms"]
            lines[-1] += (
                f" CPU per request: server {ms:.2f} ms, load generator "
                f"{overhead.get('client_cpu_ms', 0):.2f} ms: with a core to itself the server "
                f"would serve at most ~{1e3 / ms:,.0f} req/s."
            )
        bare = overhead.get("bare_grpc")
        if bare and bare.get("rps"):
            line = (
                f"Reference, same load and machine: a bare grpc.aio server answering a fixed "
                f"response (`bench/bare_server.py`, gRPC alone) serves **{bare['rps']:,.0f} "
                f"req/s** (p50 {_ms(bare['p50'])} ms); Guardwire with the fake backend serves "
                f"{_ratio(overhead['rps'], bare['rps'])} of that"
            )
            if bare.get("server_cpu_ms") and overhead.get("server_cpu_ms"):
                line += (
                    f" and spends {_ratio(overhead['server_cpu_ms'], bare['server_cpu_ms'])} "
                    f"its server CPU per request ({overhead['server_cpu_ms']:.2f} vs "
                    f"{bare['server_cpu_ms']:.2f} ms)"
                )
            lines += ["", line + "."]
    phases = results.get("server_phases")
    if phases:
        lines += [
            "",
            "Server phases (client-side latency; batch, queue and inference as the server "
            "reports them per request):",
            "",
            "| phase | offered req/s | done | req/s | p50 / p99 ms | mean batch | "
            "mean queue ms | mean inference ms | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for ph in phases:
            q, inf = ph.get("mean_queue_s"), ph.get("mean_inference_s")
            lines.append(
                f"| {ph['name']} | {_rps(ph.get('offered_rps'))} | {ph['completed']} | "
                f"{_rps(ph['rps'])} | {_ms(ph['p50'])} / {_ms(ph['p99'])} | "
                f"{'—' if ph.get('mean_batch') is None else format(ph['mean_batch'], '.1f')} | "
                f"{_ms(q)} | {_ms(inf)} | {ph['errors'] or ''} |"
            )
    if results.get("notes"):
        lines += ["", *[f"- {n}" for n in results["notes"]]]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Latency (p50 solid, p99 dashed) vs offered load, log-log; saturation as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    colors = {"moderate": "tab:red", "batched_no_prefix": "tab:orange", "server": "tab:blue"}
    colors |= {"stream": "tab:cyan", "floor": "tab:green"}
    for row in results["rows"]:
        color = colors.get(row["key"], "tab:gray")
        if row.get("rps"):
            ax.axvline(row["rps"], color=color, alpha=0.5, linewidth=1, linestyle=":")
            ax.annotate(
                f"#{row['n']} saturation",
                (row["rps"], 1.0),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize=7,
                color=color,
                ha="right",
                va="top",
            )
        pts = sorted(
            (p["offered"], p["p50"], p["p99"])
            for p in row.get("latency", {}).values()
            if p.get("p50") is not None and p.get("p99") is not None  # a phase with no answers
        )
        if not pts:
            continue
        x = [p[0] for p in pts]
        name = f"#{row['n']} {row['label']}"
        ax.plot(x, [p[1] * 1e3 for p in pts], "o-", color=color, label=f"{name}: p50")
        ax.plot(x, [p[2] * 1e3 for p in pts], "s--", color=color, label=f"{name}: p99")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (requests/s); vertical lines: saturation throughput")
    ax.set_ylabel("latency (ms)")
    meta = results["meta"]
    ax.set_title(f"Guardwire bench, {meta['shape']} ({meta['dtype']}, {meta['device']})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
