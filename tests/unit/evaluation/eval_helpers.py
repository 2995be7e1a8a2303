"""Shared helpers for the evaluation tests: the ../shared datasets and a stub client."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO.parent / "shared" / "datasets"
OPENAI_MOD = SHARED / "openai-moderation-eval" / "samples-1680.jsonl.gz"
XSTEST = SHARED / "xstest" / "xstest_prompts.csv"
XSTEST_COMPLETIONS = SHARED / "xstest" / "model_completions"


def need(path: Path) -> Path:
    """Skips the test, saying why, when the shared dataset is not there."""
    if not path.exists():
        pytest.skip(f"shared dataset absent: {path} (CI has ../shared; see shared/README.md)")
    return path


class StubError(Exception):
    def __init__(self, reason: str, message: str = "stub failure") -> None:
        super().__init__(message)
        self.reason = reason


CODES = ("S1", "S10", "S11", "S12")


def stub_score(text: str) -> float:
    """Deterministic score in [0, 1]; texts containing 'bad' score high."""
    h = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return 0.5 + 0.5 * h if "bad" in text.lower() else 0.6 * h


class StubClient:
    """Implements the part of AsyncGuardClient that the runner uses.

    Text with "FAIL" raises BACKEND_FAILURE; "BUSY" raises OVERLOADED on its first attempt.
    """

    def __init__(self, threshold: float = 0.5, delay: float = 0.0) -> None:
        self.threshold = threshold
        self.delay = delay
        self.calls: list[tuple[list[tuple[str, str]], dict[str, Any]]] = []
        self.busy_seen: set[str] = set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.target = "stub:0"

    async def __aenter__(self) -> StubClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def classify(self, conversation: list[tuple[str, str]], **kw: Any) -> Any:
        self.calls.append((conversation, kw))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            text = conversation[-1][1]
            if "FAIL" in text:
                raise StubError("BACKEND_FAILURE", "backend exploded")
            if "BUSY" in text and text not in self.busy_seen:
                self.busy_seen.add(text)
                raise StubError("OVERLOADED", "queue full")
            score = stub_score(text)
            thr = kw.get("threshold") or self.threshold
            codes = [c for c, _, _ in kw["categories"]] if kw.get("categories") else list(CODES)
            codes = [c for c in codes if c not in kw.get("excluded_codes", ())]
            k = int(hashlib.md5(text.encode()).hexdigest(), 16) % len(codes)
            cat = [
                SimpleNamespace(
                    code=c,
                    name=f"name-{c}",
                    score=score * (0.7 if i == k else 0.3 / (len(codes) - 1)),
                )
                for i, c in enumerate(codes)
            ]
            unsafe = score >= thr
            return SimpleNamespace(
                verdict="unsafe" if unsafe else "safe",
                unsafe_score=score,
                threshold=thr,
                categories=[cat[k]] if unsafe else [],
                category_scores=cat if kw.get("include_category_scores") else [],
                policy_id="p-stub",
                model_id="stub-test-model",
            )
        finally:
            self.in_flight -= 1
