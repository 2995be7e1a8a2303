"""``python -m bench``: the server against its baselines, side by side, in one run.

Steps: build (or reuse) the shape's random-weight model dir; pick the working set of requests;
run the in-process baselines in a worker process (the ``moderate()`` loop, a batched forward
without prefix cache, the compute floor); start the real server (``python -m guardwire_server
serve``)
and measure it over gRPC -- unloaded latency, saturation throughput with ``--concurrency``
callers, open-loop Poisson latency at fractions of that saturation, streams when implemented;
then the serving overhead with the fake backend. Writes ``results-<shape>.md``/``.json``,
``latency-<shape>.png`` and ``server-<shape>.log`` into ``--output``; prints the table.

Every configuration scores the same working set of requests (``--requests``), in the same
dtype, on the same device, with the same thread count; they run one after another, never
concurrently. ``bench/README.md`` explains the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from guardwire_tools.bench import driver
from guardwire_tools.bench.report import fifo_replay, markdown, percentile, plot
from guardwire_tools.bench.rss import cpu_seconds
from guardwire_tools.bench.shapes import SHAPES
from guardwire_tools.bench.workload import DEFAULT_DATASETS, load_workload

__all__ = ["main"]

ALL_CONFIGS = ("moderate", "batched", "server", "stream", "floor", "overhead")
DEFAULTS = {  # per shape: working-set size, seconds per load phase
    "small": {"requests": 48, "duration": 15.0},
    "lg3-1b": {"requests": 16, "duration": 60.0},
}
LABELS = {
    "moderate": "model card `moderate()` loop (`generate`, 3 new tokens)",
    "batched_no_prefix": "batched forward, no prefix cache",
    "server": "Guardwire server, unary gRPC",
    "stream": "Guardwire server, StreamClassify",
    "floor": "compute floor (tails on cached prefix)",
}
NUMBER = {"moderate": "1", "batched_no_prefix": "2", "server": "3", "stream": "3s", "floor": "4"}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--shape", choices=sorted(SHAPES), default="small")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument(
        "--dtype",
        default="bfloat16",
        choices=("float32", "bfloat16", "float16"),
        help="weights dtype of every configuration (default bfloat16: ~2x faster than float32 "
        "on AVX-512-BF16 CPUs)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = library default)")
    p.add_argument("--requests", type=int, help="working-set size (default: small 48, lg3-1b 16)")
    p.add_argument(
        "--duration", type=float, help="seconds per server load phase (small 15, lg3-1b 60)"
    )
    p.add_argument("--concurrency", type=int, default=16, help="callers at saturation (16)")
    p.add_argument(
        "--load-fractions", default="0.5,0.9", help="open-loop loads, fractions of saturation"
    )
    p.add_argument("--overhead-concurrency", type=int, default=64)
    p.add_argument("--overhead-channels", type=int, default=4)
    p.add_argument("--overhead-duration", type=float, default=10.0)
    p.add_argument(
        "--only",
        default=",".join(ALL_CONFIGS),
        help=f"comma-separated subset of {','.join(ALL_CONFIGS)} (default all)",
    )
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--max-batch-tokens", type=int, default=8192)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--timeout", type=float, default=600.0, help="per-request deadline (s)")
    p.add_argument("--output", default=str(Path("bench") / "results"))
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "guardwire-bench"
    p.add_argument("--model-cache", default=str(cache), help=f"model dirs (default {cache})")
    p.add_argument("--datasets", default=str(DEFAULT_DATASETS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rebuild", action="store_true", help="rebuild the model dir")
    return p


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions = {}
    for mod in ("torch", "transformers"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = "absent"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem,
        "python": platform.python_version(),
        **versions,
    }


def _run_worker(args: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "guardwire_tools.bench.worker", *args], check=True)


def _lat(latencies: list[float], offered: float) -> dict[str, Any]:
    return {
        "offered": offered,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "n": len(latencies),
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    only = {c.strip() for c in args.only.split(",") if c.strip()}
    unknown = only - set(ALL_CONFIGS)
    if unknown:
        raise SystemExit(f"--only: unknown configuration(s) {sorted(unknown)}")
    shape = SHAPES[args.shape]
    n_requests = args.requests or int(DEFAULTS[shape.name]["requests"])
    duration = args.duration if args.duration is not None else DEFAULTS[shape.name]["duration"]
    fractions = [float(f) for f in args.load_fractions.split(",") if f.strip()]
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="guardwire-bench-"))

    _log(f"[bench] model dir for shape {shape.name} (first build can take minutes) ...")
    _run_worker(
        ["build", "--shape", shape.name, "--cache", args.model_cache, "--seed", str(args.seed),
         "--out", str(work / "build.json"), *(["--rebuild"] if args.rebuild else [])]
    )  # fmt: skip
    model_dir = Path(json.loads((work / "build.json").read_text())["model_dir"])
    shape_meta = json.loads((model_dir / "bench-shape.json").read_text())
    workload = load_workload(Path(args.datasets), seed=args.seed)
    conversations = workload.take(n_requests)
    (work / "conversations.json").write_text(json.dumps(conversations))
    _log(f"[bench] {model_dir}; {workload.describe()}; working set {n_requests}")

    # -- baselines (worker process) ----------------------------------------------------------
    keys = {"moderate": "moderate", "batched_no_prefix": "batched", "floor": "floor"}
    wanted = [name for name, key in keys.items() if key in only]
    base: dict[str, Any] = {"configs": {}}
    _log(f"[bench] baselines {wanted} ...")
    _run_worker(
        ["baselines", "--model-dir", str(model_dir), "--conversations",
         str(work / "conversations.json"), "--out", str(work / "baselines.json"),
         "--device", args.device, "--dtype", args.dtype, "--threads", str(args.threads),
         "--max-batch-size", str(args.max_batch_size),
         "--max-batch-tokens", str(args.max_batch_tokens),
         "--configs", ",".join(wanted)]
    )  # fmt: skip
    base = json.loads((work / "baselines.json").read_text())

    rows: dict[str, dict[str, Any]] = {}
    for key, res in base["configs"].items():
        rows[key] = {"key": key, "rps": res["rps"], "peak_rss_mb": res.get("peak_rss_mb")}
        if "peak_gpu_mb" in res:
            rows[key]["note"] = f"peak GPU {res['peak_gpu_mb']:,.0f} MiB"
    mod = base["configs"].get("moderate")
    if mod:
        service = mod["service_s"]
        rows["moderate"]["latency"] = {
            f"{f:g}": _lat(fifo_replay(service, f * mod["rps"], seed=args.seed), f * mod["rps"])
            for f in fractions
        }
        rows["moderate"]["note"] = (
            "latency: FIFO queue replay of the measured service times under Poisson arrivals"
        )
        if mod["token_mismatch"]:
            notes.append(
                f"{mod['token_mismatch']} requests tokenized differently by the HF tokenizer "
                "than by the adapter (moderate loop)"
            )
    for key in ("batched_no_prefix", "floor"):
        if key in rows:
            res = base["configs"][key]
            pad = res["padded_tokens"] / max(1, res["real_tokens"])
            rows[key]["note"] = f"throughput only; {res['batches']} batches, padding ×{pad:.2f}" + (
                f"; {rows[key]['note']}" if "note" in rows[key] else ""
            )

    # -- the server ---------------------------------------------------------------------------
    requests = driver.to_requests(conversations)
    server_options: dict[str, object] = {
        "backend": "torch",
        "device": args.device,
        "dtype": args.dtype,
        "threads": args.threads,
        "max_batch_size": args.max_batch_size,
        "max_batch_tokens": args.max_batch_tokens,
        "max_wait_ms": args.max_wait_ms,
        "max_queue": 4096,
        "verdict_cache_entries": 0,  # the working set repeats: never answer from a cache
        "min_verdict_mass": 0.5 if shape.rigged else 0.0,
    }
    server_log = out_dir / f"server-{shape.name}.log"
    server_log.unlink(missing_ok=True)
    phases: list[dict[str, Any]] = []
    if {"server", "stream"} & only:
        _log(f"[bench] starting the server (log: {server_log}) ...")
        with driver.ServerProcess(
            model_dir, server_options, server_log, timeout_s=args.timeout
        ) as srv:
            assert srv.rss is not None
            row: dict[str, Any] = {"key": "server", "latency": {}}
            _log("[bench] server: unloaded, one request at a time ...")
            unloaded = asyncio.run(
                driver.closed_loop(
                    srv.target, requests, concurrency=1, duration_s=0.0,
                    min_requests=len(requests), timeout_s=args.timeout, warmup=2,
                )
            )  # fmt: skip
            row["unloaded"] = _lat(unloaded.latencies_s, 0.0)
            phases.append(unloaded.summary() | {"name": "unloaded (1 caller)"})
            srv.rss.reset()
            _log(f"[bench] server: saturation, {args.concurrency} callers, {duration:g} s ...")
            sat = asyncio.run(
                driver.closed_loop(
                    srv.target, requests, concurrency=args.concurrency, duration_s=duration,
                    min_requests=len(requests), timeout_s=args.timeout,
                    warmup=min(4, args.concurrency),
                )
            )  # fmt: skip
            if not sat.completed:
                raise SystemExit(
                    f"[bench] the server answered no request ({sat.errors}); see {server_log}"
                )
            row["rps"] = sat.rps
            phases.append(sat.summary() | {"name": f"saturation ({args.concurrency} callers)"})
            row["mean_batch"] = sum(sat.batch_sizes) / max(1, len(sat.batch_sizes))
            errors = dict(sat.errors)
            _log(f"[bench] server: {sat.rps:.3f} req/s (mean batch {row['mean_batch']:.1f})")
            for f in fractions:
                rate = f * sat.rps
                _log(f"[bench] server: open loop at {f:.0%} = {rate:.3f} req/s ...")
                ph = asyncio.run(
                    driver.open_loop(
                        srv.target, requests, rate=rate, duration_s=duration,
                        timeout_s=args.timeout, seed=args.seed + int(f * 1000),
                    )
                )  # fmt: skip
                row["latency"][f"{f:g}"] = _lat(ph.latencies_s, rate)
                phases.append(ph.summary() | {"name": f"open loop {f:.0%}"})
                for k, v in ph.errors.items():
                    errors[k] = errors.get(k, 0) + v
            row["peak_rss_mb"] = srv.rss.peak()
            row["note"] = f"mean batch {row['mean_batch']:.1f}" + (
                f"; errors {errors}" if errors else ""
            )
            rows["server"] = row
            if "stream" in only:
                # fresh conversations: a stream caches its conversation's KV, so a repeated
                # working set would measure cache hits
                fresh = driver.to_requests(workload.conversations[n_requests:]) or requests
                status = asyncio.run(driver.stream_status(srv.target, fresh[-1], args.timeout))
                if status != "ok":
                    notes.append(f"StreamClassify skipped: the server answers {status}")
                else:
                    _log("[bench] server: streams, saturation ...")
                    srv.rss.reset()
                    st = asyncio.run(
                        driver.stream_closed_loop(
                            srv.target, fresh, concurrency=args.concurrency,
                            duration_s=duration, min_requests=len(requests),
                            timeout_s=args.timeout,
                        )
                    )  # fmt: skip
                    phases.append(st.summary() | {"name": "streams saturation"})
                    rows["stream"] = {
                        "key": "stream",
                        "rps": st.rps,
                        "peak_rss_mb": srv.rss.peak(),
                        "note": "one stream per check (history in open, the turn), fresh "
                        "conversations of the same mix"
                        + (f"; errors {st.errors}" if st.errors else ""),
                    }

    overhead = None
    if "overhead" in only:

        def overhead_phase(srv: driver.ServerProcess) -> tuple[driver.PhaseResult, list[float]]:
            """The closed-loop phase; returns it and the CPU ms per request of server, client."""
            assert srv.proc is not None
            cpu0 = (cpu_seconds(srv.proc.pid), cpu_seconds())
            ph = asyncio.run(
                driver.closed_loop(
                    srv.target, requests, concurrency=args.overhead_concurrency,
                    duration_s=args.overhead_duration, min_requests=0, timeout_s=30,
                    channels=args.overhead_channels, warmup=args.overhead_concurrency,
                )
            )  # fmt: skip
            cpu1 = (cpu_seconds(srv.proc.pid), cpu_seconds())
            if not ph.completed:
                return ph, [0.0, 0.0]
            return ph, [
                (b - a) / ph.completed * 1e3 if a is not None and b is not None else 0.0
                for a, b in zip(cpu0, cpu1, strict=True)
            ]

        _log("[bench] serving overhead: bare grpc.aio (canned answers), the reference ...")
        with driver.ServerProcess.bare(server_log, timeout_s=60) as srv:
            bare, bare_cpu = overhead_phase(srv)
        _log(f"[bench] bare grpc.aio: {bare.rps:,.0f} req/s")
        _log(f"[bench] serving overhead: fake backend, {args.overhead_concurrency} callers ...")
        with driver.ServerProcess(
            model_dir, {**server_options, "backend": "fake"}, server_log, timeout_s=120
        ) as srv:
            ph, cpu_ms = overhead_phase(srv)
        no_server_timings = {"mean_batch": None, "mean_queue_s": None, "mean_inference_s": None}
        phases.append(
            bare.summary()
            | {"name": "bare grpc.aio, canned answers (reference)", **no_server_timings}
        )
        phases.append(ph.summary() | {"name": "fake backend (overhead)"})
        overhead = {
            "rps": ph.rps,
            "p50": ph.percentile(50),
            "p99": ph.percentile(99),
            "concurrency": args.overhead_concurrency,
            "channels": args.overhead_channels,
            "duration_s": args.overhead_duration,
            "mean_batch": sum(ph.batch_sizes) / max(1, len(ph.batch_sizes)),
            "errors": ph.errors,
            # CPU per request, server and load generator (both share the machine's cores)
            "server_cpu_ms": cpu_ms[0],
            "client_cpu_ms": cpu_ms[1],
            "bare_grpc": {
                "rps": bare.rps,
                "p50": bare.percentile(50),
                "server_cpu_ms": bare_cpu[0],
                "errors": bare.errors,
            },
        }
        _log(f"[bench] serving overhead: {ph.rps:,.0f} req/s")

    ordered = []
    for key in ("moderate", "batched_no_prefix", "server", "stream", "floor"):
        if key in rows:
            rows[key]["label"], rows[key]["n"] = LABELS[key], NUMBER[key]
            ordered.append(rows[key])
    results = {
        "meta": {
            **_machine(),
            "shape": shape.name,
            "shape_note": shape.note,
            "tokenizer": shape_meta.get("tokenizer"),
            "params_m": base.get("params_m", 0.0),
            "dtype": args.dtype,
            "device": base.get("device", args.device),
            "threads": args.threads,
            "requests": n_requests,
            "workload": workload.describe(),
            "tokens": base.get("tokens", {"prefix": [], "tail_mean": 0, "tail_max": 0,
                                          "total_mean": 0}),
            "concurrency": args.concurrency,
            "duration_s": duration,
            "load_fractions": fractions,
            "server_args": " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in server_options.items()
            ),
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "command": " ".join(["python -m bench", *map(shlex.quote, argv or sys.argv[1:])]),
        },
        "rows": ordered,
        "overhead": overhead,
        "server_phases": phases,
        "notes": notes,
        "baselines_raw": base,
    }  # fmt: skip
    (out_dir / f"results-{shape.name}.json").write_text(json.dumps(results, indent=1))
    text = markdown(results)
    (out_dir / f"results-{shape.name}.md").write_text(text)
    try:
        plot(results, out_dir / f"latency-{shape.name}.png")
    except ImportError:
        notes.append("no plot: matplotlib is not installed")
    print(text)
    return 0
