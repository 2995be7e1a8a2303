"""The request mix: realistic conversations with real prompt and response lengths.

Traffic of a guard sidecar is one prompt check and one response check per LLM exchange, so the
mix is half user-turn checks (prompts from XSTest and the OpenAI moderation eval) and half
assistant-turn checks (XSTest prompts with real model completions), shuffled with a seed. Without
``../shared/datasets`` a synthetic mix with similar lengths is used (and said so in the report).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_DATASETS", "Workload", "load_workload"]

DEFAULT_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"

Conversation = list[tuple[str, str]]  # (role, text), user first, alternating


@dataclass(frozen=True)
class Workload:
    conversations: list[Conversation]
    source: str  # what the mix was drawn from

    def take(self, n: int) -> list[Conversation]:
        """The first ``n`` conversations (cycling when the pool is smaller)."""
        pool = self.conversations
        return [pool[i % len(pool)] for i in range(n)]

    def describe(self) -> str:
        users = sum(1 for c in self.conversations if c[-1][0] == "user")
        return (
            f"{len(self.conversations)} conversations ({users} prompt checks, "
            f"{len(self.conversations) - users} response checks) from {self.source}"
        )


def _clean(conversation: Conversation) -> Conversation | None:
    turns = [(role, text.strip()) for role, text in conversation]
    return turns if all(text for _, text in turns) else None


def _from_datasets(root: Path) -> tuple[list[Conversation], list[Conversation]]:
    from guardwire_tools.evaluation.datasets import (
        read_openai_moderation,
        read_xstest,
        read_xstest_completions,
    )

    prompts: list[Conversation] = []
    responses: list[Conversation] = []
    xs = root / "xstest" / "xstest_prompts.csv"
    if xs.is_file():
        prompts += [c for e in read_xstest(xs) if (c := _clean(e.conversation))]
    oai = root / "openai-moderation-eval" / "samples-1680.jsonl.gz"
    if oai.is_file():
        prompts += [c for e in read_openai_moderation(oai) if (c := _clean(e.conversation))]
    completions = root / "xstest" / "model_completions"
    if completions.is_dir():
        responses += [
            c
            for e in read_xstest_completions(completions, include_ambiguous=True)
            if (c := _clean(e.conversation))
        ]
    return prompts, responses


_WORDS = (
    "the a to of and how can I my you is what for with do in it that this on be are about "
    "bread recipe process kill python weather travel help question answer please explain why "
    "where when people should would could make find best way good time work home friend"
).split()


def _synthetic(rng: random.Random, n: int) -> tuple[list[Conversation], list[Conversation]]:
    """Prompts of ~5..200 words and responses of ~20..400 words (lognormal, like the data)."""

    def text(mu: float, sigma: float, cap: int) -> str:
        words = max(3, min(cap, int(rng.lognormvariate(mu, sigma))))
        return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "."

    prompts = [[("user", text(3.0, 0.9, 400))] for _ in range(n)]
    responses = [
        [("user", text(2.5, 0.5, 60)), ("assistant", text(4.6, 0.7, 800))] for _ in range(n)
    ]
    return prompts, responses


def _draw(rng: random.Random, pool: list[Conversation], n: int) -> list[Conversation]:
    """``n`` conversations without repeats while the pool lasts."""
    out: list[Conversation] = []
    while len(out) < n:
        out += rng.sample(pool, min(len(pool), n - len(out)))
    return out


def load_workload(
    datasets: Path | None = None, *, size: int = 2000, seed: int = 0, response_share: float = 0.5
) -> Workload:
    """A shuffled mix of ``size`` conversations, ``response_share`` of them response checks."""
    rng = random.Random(seed)
    root = datasets if datasets is not None else DEFAULT_DATASETS
    prompts: list[Conversation] = []
    responses: list[Conversation] = []
    if root.is_dir():
        prompts, responses = _from_datasets(root)
    source = f"{root} (XSTest prompts + completions, OpenAI moderation eval)"
    if not prompts or not responses:
        prompts, responses = _synthetic(rng, size)
        source = "a synthetic mix (../shared/datasets not found)"
    n_resp = round(size * response_share)
    chosen = _draw(rng, responses, n_resp) + _draw(rng, prompts, size - n_resp)
    rng.shuffle(chosen)
    return Workload(conversations=chosen, source=source)
