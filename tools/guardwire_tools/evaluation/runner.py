"""Streams labelled examples through a running sidecar and collects scores.

``run_eval`` keeps ``concurrency`` Classify calls in flight through the Python client
(:class:`guardwire.client.AsyncGuardClient`), always asking for every category's score, and
returns one :class:`ExampleResult` per example that was sent: a score, or an error with its reason.
Errors are never dropped: a retryable failure (overload, model not ready, draining) is retried
``retries`` times with backoff, and whatever still fails is recorded. After more than ``max_errors``
failures no new example is sent, and the run says it was aborted and how many were not sent.

Example::

    run = asyncio.run(run_eval("127.0.0.1:50051", dataset.examples, concurrency=8))
    print(run.counts())
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TextIO

from guardwire_tools.evaluation.datasets import LabeledExample

__all__ = [
    "EvalPolicy",
    "EvalRun",
    "ExampleResult",
    "Progress",
    "error_reason",
    "run_eval",
]

RETRYABLE = frozenset({"OVERLOADED", "MODEL_NOT_READY", "DRAINING", "RESOURCE_EXHAUSTED"})
_MODEL_INFO_FIELDS = (
    "model_id",
    "revision",
    "family",
    "backend",
    "device",
    "dtype",
    "default_threshold",
    "template_hash",
)


class ClassifyClient(Protocol):
    async def classify(self, conversation: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class EvalPolicy:
    """What to ask the server for: a named policy, excluded codes or custom categories."""

    policy_id: str | None = None
    categories: tuple[tuple[str, str, str], ...] | None = None
    excluded_codes: tuple[str, ...] = ()
    threshold: float | None = None  # None: the server's default

    def classify_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"include_category_scores": True}
        if self.policy_id:
            kw["policy_id"] = self.policy_id
        if self.categories is not None:
            kw["categories"] = list(self.categories)
        if self.excluded_codes:
            kw["excluded_codes"] = list(self.excluded_codes)
        if self.threshold is not None:
            kw["threshold"] = self.threshold
        return kw

    def describe(self) -> dict[str, Any]:
        return {
            "policy_id": self.policy_id,
            "custom_categories": [list(c) for c in self.categories] if self.categories else None,
            "excluded_codes": list(self.excluded_codes),
            "requested_threshold": self.threshold,
        }


@dataclass(frozen=True, slots=True)
class ExampleResult:
    """The label of one example and either the server's answer or the error it got."""

    id: str
    unsafe: bool
    categories: frozenset[str]
    known_categories: frozenset[str] | None
    tags: Mapping[str, str]
    unsafe_score: float | None = None
    verdict: str | None = None
    threshold: float | None = None
    violated: tuple[str, ...] = ()
    category_scores: Mapping[str, float] = field(default_factory=dict)
    error_reason: str | None = None
    error_message: str | None = None
    attempts: int = 1
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error_reason is None

    def category_known(self, code: str) -> bool:
        return code in self.categories or (
            self.known_categories is None or code in self.known_categories
        )

    def as_json(self) -> dict[str, Any]:
        """One line of ``predictions.jsonl`` (ids, labels and scores; never the text)."""
        return {
            "id": self.id,
            "unsafe": self.unsafe,
            "categories": sorted(self.categories),
            "known_categories": None
            if self.known_categories is None
            else sorted(self.known_categories),
            "tags": dict(self.tags),
            "unsafe_score": self.unsafe_score,
            "verdict": self.verdict,
            "threshold": self.threshold,
            "violated": list(self.violated),
            "category_scores": dict(self.category_scores),
            "error_reason": self.error_reason,
            "error_message": self.error_message,
            "attempts": self.attempts,
            "latency_s": round(self.latency_s, 6),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ExampleResult:
        known = d.get("known_categories")
        return cls(
            id=str(d["id"]),
            unsafe=bool(d["unsafe"]),
            categories=frozenset(d.get("categories") or ()),
            known_categories=None if known is None else frozenset(known),
            tags=dict(d.get("tags") or {}),
            unsafe_score=d.get("unsafe_score"),
            verdict=d.get("verdict"),
            threshold=d.get("threshold"),
            violated=tuple(d.get("violated") or ()),
            category_scores=dict(d.get("category_scores") or {}),
            error_reason=d.get("error_reason"),
            error_message=d.get("error_message"),
            attempts=int(d.get("attempts", 1)),
            latency_s=float(d.get("latency_s", 0.0)),
        )


@dataclass(slots=True)
class EvalRun:
    """Everything ``run_eval`` learned; ``results`` follow the order of the examples sent."""

    target: str
    results: list[ExampleResult]
    selected: int  # examples given to run_eval
    not_run: int  # examples never sent because the run was aborted
    model_id: str = ""
    policy_id: str = ""
    served_threshold: float | None = None
    category_names: dict[str, str] = field(default_factory=dict)
    model_info: dict[str, Any] = field(default_factory=dict)
    policy: EvalPolicy = field(default_factory=EvalPolicy)
    concurrency: int = 1
    elapsed_s: float = 0.0
    aborted: str | None = None

    @property
    def scored(self) -> list[ExampleResult]:
        return [r for r in self.results if r.ok]

    @property
    def errors(self) -> list[ExampleResult]:
        return [r for r in self.results if not r.ok]

    def counts(self) -> dict[str, int]:
        scored = self.scored
        return {
            "selected": self.selected,
            "scored": len(scored),
            "errors": len(self.results) - len(scored),
            "not_run": self.not_run,
            "scored_unsafe": sum(r.unsafe for r in scored),
            "scored_safe": sum(not r.unsafe for r in scored),
            "retried": sum(r.attempts > 1 for r in self.results),
        }

    def errors_by_reason(self) -> dict[str, int]:
        return dict(Counter(r.error_reason or "" for r in self.errors).most_common())


def error_reason(exc: BaseException) -> str:
    """The server's ErrorReason when the client decoded one, else the status code or type."""
    reason = getattr(exc, "reason", "")
    if isinstance(reason, str) and reason:
        return reason
    code = getattr(exc, "code", None)
    name = getattr(code, "name", None)
    if isinstance(name, str) and name:
        return name
    return type(exc).__name__


class Progress:
    """A dependency-free progress bar on stderr.

    On a terminal it redraws one line (at most 10 times a second); otherwise it prints a line at
    every 10% so CI logs stay short.
    """

    def __init__(self, total: int, *, stream: TextIO | None = None, label: str = "eval") -> None:
        self.total = max(total, 0)
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.done = 0
        self.errors = 0
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def advance(self, ok: bool) -> None:
        self.done += 1
        self.errors += 0 if ok else 1
        now = time.monotonic()
        if self._tty:
            if now - self._last_draw >= 0.1 or self.done == self.total:
                self._last_draw = now
                self.stream.write("\r" + self.line())
                self.stream.flush()
        else:
            decile = (10 * self.done) // self.total if self.total else 10
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(self.line() + "\n")
                self.stream.flush()

    def line(self) -> str:
        width = 30
        frac = self.done / self.total if self.total else 1.0
        filled = int(width * frac)
        elapsed = time.monotonic() - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        return (
            f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"{100 * frac:5.1f}% {rate:6.1f}/s errors {self.errors} eta {eta:4.0f}s"
        )

    def close(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()


ProgressArg = bool | Progress | Callable[[int], Progress] | None


def _make_progress(progress: ProgressArg, total: int) -> Progress | None:
    if progress is None or progress is False:
        return None
    if progress is True:
        return Progress(total)
    if isinstance(progress, Progress):
        return progress
    return progress(total)


def _scores(items: Iterable[Any]) -> tuple[dict[str, float], dict[str, str]]:
    scores: dict[str, float] = {}
    names: dict[str, str] = {}
    for c in items or ():
        scores[str(c.code)] = float(c.score)
        names[str(c.code)] = str(getattr(c, "name", "") or "")
    return scores, names


def _verdict(v: Any) -> str:
    """ "safe"/"unsafe" from a string, an enum (by value or name) or a proto enum name."""
    raw = getattr(v, "value", v)
    text = str(raw if isinstance(raw, str) else getattr(v, "name", v)).lower()
    return text.removeprefix("verdict_")


async def _model_info(client: Any) -> dict[str, Any]:
    """GetModelInfo through the client when it offers it; failures are noted, not fatal."""
    for name in ("get_model_info", "model_info"):
        fn = getattr(client, name, None)
        if callable(fn):
            try:
                info = await fn()
            except Exception as exc:  # diagnostics only; the eval itself decides success
                return {"error": f"{type(exc).__name__}: {exc}"}
            return {k: getattr(info, k) for k in _MODEL_INFO_FIELDS if hasattr(info, k)}
    return {}


async def run_eval(
    target: str | ClassifyClient,
    examples: Sequence[LabeledExample],
    concurrency: int = 8,
    policy: EvalPolicy | None = None,
    timeout: float = 30.0,
    progress: ProgressArg = True,
    *,
    retries: int = 2,
    backoff_s: float = 0.2,
    max_errors: int | None = None,
) -> EvalRun:
    """Classifies ``examples`` through the sidecar at ``target`` (an address or a client object).

    ``timeout`` is the per-call deadline. Results keep the examples' order. ``max_errors``:
    stop sending new examples after more errors than this (``None``: never stop).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    policy = policy or EvalPolicy()
    if isinstance(target, str):
        try:
            from guardwire.client import AsyncGuardClient
        except ImportError as exc:  # pragma: no cover - the client ships with the package
            raise RuntimeError("the guardwire Python client is not importable") from exc
        async with AsyncGuardClient(target, timeout=timeout) as client:
            run = await _run(
                client,
                examples,
                concurrency,
                policy,
                timeout,
                progress,
                retries,
                backoff_s,
                max_errors,
            )
        run.target = target
        return run
    run = await _run(
        target, examples, concurrency, policy, timeout, progress, retries, backoff_s, max_errors
    )
    run.target = getattr(target, "target", "") or type(target).__name__
    return run


async def _run(
    client: Any,
    examples: Sequence[LabeledExample],
    concurrency: int,
    policy: EvalPolicy,
    timeout: float,
    progress: ProgressArg,
    retries: int,
    backoff_s: float,
    max_errors: int | None,
) -> EvalRun:
    start = time.monotonic()
    info = await _model_info(client)
    kwargs = policy.classify_kwargs()
    results: list[ExampleResult | None] = [None] * len(examples)
    bar = _make_progress(progress, len(examples))
    state = {"next": 0, "errors": 0}
    aborted: list[str] = []
    seen: dict[str, Any] = {"model_id": "", "policy_id": "", "threshold": None, "names": {}}

    async def one(ex: LabeledExample) -> ExampleResult:
        base = ExampleResult(
            id=ex.id,
            unsafe=ex.unsafe,
            categories=ex.categories,
            known_categories=ex.known_categories,
            tags=ex.tags,
        )
        attempt = 0
        t0 = time.monotonic()
        while True:
            attempt += 1
            try:
                res = await asyncio.wait_for(
                    client.classify(list(ex.conversation), **kwargs), timeout * 2 + 5
                )
            except asyncio.TimeoutError:
                reason, message = "LOCAL_TIMEOUT", f"no answer within {timeout * 2 + 5:.0f}s"
            except Exception as exc:  # every failure is recorded per example, never dropped
                reason, message = error_reason(exc), str(exc) or type(exc).__name__
                if reason in RETRYABLE and attempt <= retries:
                    delay = getattr(exc, "retry_delay_s", None) or backoff_s * 2 ** (attempt - 1)
                    await asyncio.sleep(min(float(delay), 5.0))
                    continue
            else:
                scores, names = _scores(getattr(res, "category_scores", ()) or ())
                violated, vnames = _scores(getattr(res, "categories", ()) or ())
                seen["names"].update(names)
                seen["names"].update(vnames)
                seen["model_id"] = seen["model_id"] or str(getattr(res, "model_id", "") or "")
                seen["policy_id"] = seen["policy_id"] or str(getattr(res, "policy_id", "") or "")
                thr = float(res.threshold)
                if seen["threshold"] is None:
                    seen["threshold"] = thr
                for code, score in violated.items():
                    scores.setdefault(code, score)
                return replace(
                    base,
                    unsafe_score=float(res.unsafe_score),
                    verdict=_verdict(res.verdict),
                    threshold=thr,
                    violated=tuple(violated),
                    category_scores=scores,
                    attempts=attempt,
                    latency_s=time.monotonic() - t0,
                )
            return replace(
                base,
                error_reason=reason,
                error_message=message[:500],
                attempts=attempt,
                latency_s=time.monotonic() - t0,
            )

    async def worker() -> None:
        while not aborted and state["next"] < len(examples):
            i = state["next"]
            state["next"] += 1
            r = await one(examples[i])
            results[i] = r
            if not r.ok:
                state["errors"] += 1
                if max_errors is not None and state["errors"] > max_errors and not aborted:
                    aborted.append(f"more than {max_errors} errors")
            if bar is not None:
                bar.advance(r.ok)

    try:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(examples)) or 1)))
    finally:
        if bar is not None:
            bar.close()
    done = [r for r in results if r is not None]
    return EvalRun(
        target="",
        results=done,
        selected=len(examples),
        not_run=len(examples) - len(done),
        model_id=seen["model_id"] or str(info.get("model_id", "")),
        policy_id=seen["policy_id"],
        served_threshold=seen["threshold"],
        category_names=dict(seen["names"]),
        model_info=info,
        policy=policy,
        concurrency=concurrency,
        elapsed_s=time.monotonic() - start,
        aborted=aborted[0] if aborted else None,
    )
