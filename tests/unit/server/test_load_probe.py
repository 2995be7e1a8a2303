"""The load probe picks the answer convention with the most verdict-token mass, refuses when none
passes, and works for multi-pass adapters; named policies are checked by rendering them."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from guardwire_backends.base import BackendStartError, ReadoutResult, ScoreItem, ScoreResult
from guardwire_server.adapters.granite_guardian import GraniteGuardianAdapter
from guardwire_server.adapters.llama_guard_v2 import LlamaGuard2Adapter
from guardwire_server.adapters.tokenization import Tokenizer
from guardwire_server.config import ConfigError
from guardwire_server.domain import Category, Policy
from guardwire_server.loading import policy_check, probe_model
from guardwire_server.policies import build_catalog, parse_policies

LLAMA3 = Path(__file__).resolve().parents[3].parent / "shared/reference/tokenizers/llama3"


class StubBackend:
    """Puts most of the mass on ``favoured`` token ids at every verdict readout."""

    def __init__(self, favoured: Sequence[int]) -> None:
        self.favoured = set(favoured)
        self.calls: list[int] = []

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        self.calls.append(len(items))
        out = []
        for item in items:
            readouts = []
            for r in item.readouts:
                logits = tuple(2.0 if t in self.favoured else 0.0 for t in r.token_ids)
                # full-vocab log-sum-exp: the favoured tokens hold ~all the mass, others ~none
                rest = 1e-3 if self.favoured & set(r.token_ids) else 1e4
                lse = math.log(sum(math.exp(x) for x in logits) + rest)
                readouts.append(ReadoutResult(logits, lse if r.with_logsumexp else None))
            out.append(ScoreResult(tuple(readouts), computed_tokens=1, cached_tokens=0))
        return out


@pytest.fixture(scope="module")
def lg2() -> LlamaGuard2Adapter:
    if not (LLAMA3 / "tokenizer.json").is_file():
        pytest.skip("reference Llama 3 tokenizer absent")
    return LlamaGuard2Adapter(Tokenizer.from_dir(LLAMA3))


@pytest.mark.parametrize(
    ("favoured", "convention"), [((6220, 20451), "space"), ((19193, 39257), "nospace")]
)
def test_probe_picks_the_convention_the_model_supports(
    lg2: LlamaGuard2Adapter,
    favoured: tuple[int, int],
    convention: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = StubBackend(favoured)
    with caplog.at_level(logging.INFO, logger="guardwire_server.loading"):
        report = probe_model(lg2, backend, 0.5)  # type: ignore[arg-type]
    assert report.convention == convention
    assert report.adapter.convention == convention
    assert report.adapter.verdict_token_ids == favoured
    assert set(report.masses) == {"space", "nospace"}
    assert report.mass > 0.99 and min(report.masses.values()) < 0.01
    assert f"answer convention '{convention}' chosen for llama-guard-2" in caplog.text


def test_probe_refuses_when_no_convention_passes(lg2: LlamaGuard2Adapter) -> None:
    with pytest.raises(BackendStartError, match=r"space=.*nospace=.*llama-guard-2"):
        probe_model(lg2, StubBackend(()), 0.5)  # type: ignore[arg-type]


def test_ties_keep_the_preferred_convention(lg2: LlamaGuard2Adapter) -> None:
    report = probe_model(lg2, StubBackend((6220, 20451, 19193, 39257)), 0.5)  # type: ignore[arg-type]
    assert report.convention == "space"


def _granite(tmp_path: Path) -> GraniteGuardianAdapter:
    from guardwire_tools.tiny_model import FAMILY_RIGS, train_tokenizer

    spec = FAMILY_RIGS["granite-guardian-3"]
    raw = train_tokenizer(specials=spec.specials, bos=spec.bos, required=(spec.safe, spec.unsafe))
    raw.save(str(tmp_path / "tokenizer.json"))
    return GraniteGuardianAdapter(Tokenizer.from_dir(tmp_path))


def test_probe_scores_every_pass(tmp_path: Path) -> None:
    adapter = _granite(tmp_path)
    backend = StubBackend(adapter.verdict_token_ids)
    report = probe_model(adapter, backend, 0.5)  # type: ignore[arg-type]
    assert report.convention == "yes-no" and report.adapter is adapter
    # one backend call: 2 probe conversations x one pass per category (7 built-in risks)
    assert backend.calls == [14]


def test_named_policies_are_checked_by_rendering(tmp_path: Path) -> None:
    adapter = _granite(tmp_path)
    check = policy_check(adapter)
    ok = {"pii": {"categories": [{"code": "pii", "name": "pii", "description": "Addresses."}]}}
    catalog = build_catalog(parse_policies(ok), adapter.default_policy, check=check)
    assert list(catalog.named) == ["pii"]
    bad = {"mine": {"categories": [{"code": "x", "name": "made_up"}]}}
    with pytest.raises(ConfigError, match=r"policies\.mine: .*not a built-in Granite"):
        build_catalog(parse_policies(bad), adapter.default_policy, check=check)
    relevance = Policy((Category("rel", "answer_relevance"),))
    check(relevance)  # renders for an assistant turn: accepted
