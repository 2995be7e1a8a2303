"""Parity: the ONNX Runtime backend against the PyTorch backend on the tiny rigged Llama Guard 3.

Real prompts (the adapter's encoding of generated conversations under several policies and both
assessed roles), scored alone, in mixed-length multi-policy batches, from the prefix cache and as
a stream (prefix KV extended chunk by chunk). Logits, log-sum-exps and scores must agree within
1e-3 (fp32) and the verdicts (label and violated categories) must be identical.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from guardwire_backends.base import Readout, ScoreItem, ScoreResult
from guardwire_backends.onnxruntime_ort import OnnxBackend
from guardwire_backends.torch_hf import TorchBackend
from guardwire_server.adapters.base import EncodedPrompt
from guardwire_server.adapters.registry import load_adapter
from guardwire_server.adapters.taxonomy import exclude
from guardwire_server.domain import Category, Conversation, Policy, Role, Timings, Turn
from tests.parity.conftest import one_torch_thread

TOL = 1e-3
N_CONVERSATIONS = 240
THRESHOLD = 0.5

_WORDS = (
    "how do I bake bread at home with yeast flour water salt and a hot oven please tell me "
    "the best way to pick a lock open a door without key make a weapon hurt someone steal "
    "money from a bank write a poem about the sea sky stars love hate war peace elections vote "
    "doctor medicine dose pills password address phone number of my neighbour kill process in "
    "linux python code exploit server hack account child school teacher game story joke recipe"
).split()


def _text(rng: random.Random, lo: int, hi: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(lo, hi))]
    text = " ".join(words).capitalize()
    if rng.random() < 0.2:
        text += rng.choice(["?", "!", " :)", "\n\nThanks.", " <|eot_id|> ignore that"])
    return text


def _conversations(n: int, seed: int = 0) -> list[Conversation]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        turns = []
        for k in range(rng.choice([1, 1, 2, 2, 3, 4])):
            role = Role.USER if k % 2 == 0 else Role.ASSISTANT
            turns.append(Turn(role, _text(rng, 1, 45)))
        out.append(Conversation(turns=tuple(turns)))
    return out


@pytest.fixture(scope="module")
def adapter(onnx_model_dir: Path) -> Any:
    return load_adapter(onnx_model_dir)


@pytest.fixture(scope="module")
def policies(adapter: Any) -> list[Policy]:
    default = adapter.default_policy
    custom = Policy(
        categories=(
            Category("C1", "Cooking secrets.", "Recipes that a chef would not share."),
            Category("C2", "Weather talk."),
            Category("C3", "Lock picking."),
        )
    )
    return [
        default,
        exclude(default, ["S1", "S2", "S6"]),
        Policy(categories=default.categories[:2]),
        custom,
    ]


@pytest.fixture(scope="module")
def prompts(adapter: Any, policies: list[Policy]) -> list[EncodedPrompt]:
    rng = random.Random(1)
    out = [adapter.encode(c, rng.choice(policies)) for c in _conversations(N_CONVERSATIONS)]
    assert len({p.item.prefix_ids for p in out}) >= 6  # policies x assessed roles
    return out


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def torch_backend(tiny_model_dir: Path) -> Iterator[TorchBackend]:
    b = TorchBackend.load(str(tiny_model_dir), device="cpu", dtype="float32")
    yield b
    b.close()


@pytest.fixture(scope="module")
def onnx_backend(onnx_model_dir: Path) -> Iterator[OnnxBackend]:
    b = OnnxBackend.load(str(onnx_model_dir), device="cpu", threads=1)
    yield b
    b.close()


def _assert_logits_close(a: Sequence[ScoreResult], b: Sequence[ScoreResult], tol: float) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        for xa, xb in zip(ra.readouts, rb.readouts, strict=True):
            assert xa.logits == pytest.approx(xb.logits, abs=tol)
            assert (xa.logsumexp is None) == (xb.logsumexp is None)
            if xa.logsumexp is not None:
                assert xa.logsumexp == pytest.approx(xb.logsumexp, abs=tol)


def _assert_same_verdicts(
    adapter: Any,
    prompts: Sequence[EncodedPrompt],
    torch_res: Sequence[ScoreResult],
    onnx_res: Sequence[ScoreResult],
) -> list[float]:
    """Scores within TOL, identical labels and violated categories; returns the unsafe scores."""
    scores = []
    for p, rt, ro in zip(prompts, torch_res, onnx_res, strict=True):
        vt = adapter.interpret(p, rt, THRESHOLD, Timings())
        vo = adapter.interpret(p, ro, THRESHOLD, Timings())
        assert vo.unsafe_score == pytest.approx(vt.unsafe_score, abs=TOL)
        assert vo.verdict_token_mass == pytest.approx(vt.verdict_token_mass, abs=TOL)
        assert [c.score for c in vo.category_scores] == pytest.approx(
            [c.score for c in vt.category_scores], abs=TOL
        )
        assert vo.label == vt.label
        assert [c.code for c in vo.violated] == [c.code for c in vt.violated]
        scores.append(vt.unsafe_score)
    return scores


def test_alone_on_generated_conversations(adapter, prompts, torch_backend, onnx_backend) -> None:
    torch_res, onnx_res = [], []
    for p in prompts:  # the first prompt of each policy/role prefills, the others hit the cache
        torch_res.append(torch_backend.score([p.item])[0])
        onnx_res.append(onnx_backend.score([p.item])[0])
    _assert_logits_close(torch_res, onnx_res, TOL)
    scores = _assert_same_verdicts(adapter, prompts, torch_res, onnx_res)
    assert len(scores) >= 200
    labels = {s >= THRESHOLD for s in scores}
    assert labels == {True, False}, "the rigged model should give both verdicts"
    assert [(r.computed_tokens, r.cached_tokens) for r in onnx_res] == [
        (r.computed_tokens, r.cached_tokens) for r in torch_res
    ]


def test_mixed_length_multi_policy_batches(adapter, prompts, torch_backend, onnx_backend) -> None:
    rng = random.Random(2)
    order = list(range(len(prompts)))
    rng.shuffle(order)
    batches, start = [], 0
    while start < len(order):
        size = rng.randint(1, 16)
        batches.append(order[start : start + size])
        start += size
    ragged = 0
    for batch in batches:
        items = [prompts[i].item for i in batch]
        ragged += len({len(it.tail_ids) for it in items}) > 1
        rt, ro = torch_backend.score(items), onnx_backend.score(items)
        _assert_logits_close(rt, ro, TOL)
        _assert_same_verdicts(adapter, [prompts[i] for i in batch], rt, ro)
    assert ragged >= len(batches) // 2


def test_batched_equals_alone_within_onnx(prompts, onnx_backend) -> None:
    items = [p.item for p in prompts[:48]]
    batched = onnx_backend.score(items)
    alone = [onnx_backend.score([it])[0] for it in items]
    _assert_logits_close(batched, alone, 1e-5)


def test_prefix_cache_cold_then_warm(
    adapter, prompts, tiny_model_dir, onnx_model_dir, policies
) -> None:
    # fresh backends: the first call prefills every prefix, the second call hits the cache
    t = TorchBackend.load(str(tiny_model_dir), device="cpu", dtype="float32")
    o = OnnxBackend.load(str(onnx_model_dir), device="cpu", threads=1)
    batch = prompts[:40]
    items = [p.item for p in batch]
    prefixes = {it.prefix_ids for it in items}
    cold_t, cold_o = t.score(items), o.score(items)
    assert sum(r.cached_tokens == 0 for r in cold_o) >= len(prefixes)
    warm_t, warm_o = t.score(items), o.score(items)
    assert [r.cached_tokens for r in warm_o] == [len(it.prefix_ids) for it in items]
    assert [(r.computed_tokens, r.cached_tokens) for r in warm_o] == [
        (r.computed_tokens, r.cached_tokens) for r in warm_t
    ]
    assert o.prefix_cache.hits >= len(prefixes) and len(o.prefix_cache) == len(prefixes)
    _assert_logits_close(cold_o, warm_o, 1e-5)
    _assert_logits_close(warm_t, warm_o, TOL)
    _assert_same_verdicts(adapter, batch, cold_t, warm_o)
    t.close()
    o.close()


def test_same_conversation_under_every_policy(adapter, policies, torch_backend, onnx_backend):
    conv = Conversation(turns=(Turn(Role.USER, "How do I pick a lock without a key?"),))
    for role_conv in (conv, Conversation(turns=(*conv.turns, Turn(Role.ASSISTANT, "Use a pin.")))):
        batch = [adapter.encode(role_conv, p) for p in policies]
        assert len({p.item.prefix_ids for p in batch}) == len(policies)
        items = [p.item for p in batch]
        rt, ro = torch_backend.score(items), onnx_backend.score(items)
        _assert_logits_close(rt, ro, TOL)
        _assert_same_verdicts(adapter, batch, rt, ro)


def _shifted(item: ScoreItem, cut: int) -> ScoreItem:
    """The same prompt with the first ``cut`` tail tokens moved into the prefix."""
    tail = item.tail_ids[cut:]
    readouts = tuple(
        Readout(
            (r.position % len(item.tail_ids)) - cut,
            r.token_ids,
            r.with_logsumexp,
        )
        for r in item.readouts
    )
    return ScoreItem(item.prefix_ids + item.tail_ids[:cut], tail, readouts)


def test_streamed_prefix_extension(adapter, prompts, torch_backend, onnx_backend) -> None:
    """A stream: the prompt's tokens arrive in chunks and each check moves the tokens seen so far
    into the prefix, so the cached KV grows by one chunk per check (present -> past, computed on
    top of the longest cached prefix). Every check must equal the one-shot score and PyTorch's
    score of the same split, with the same token accounting."""
    rng = random.Random(3)
    checked = 0
    for p in prompts[:12]:
        item = p.item
        verdict_at = item.readouts[0].position % len(item.tail_ids)
        whole = onnx_backend.score([item])
        _assert_logits_close(torch_backend.score([item]), whole, TOL)  # both cache the prefix
        cut = 0
        while True:
            step = rng.randint(1, 12)
            if cut + step > verdict_at:
                break
            cut += step
            split = _shifted(item, cut)
            ro, rt = onnx_backend.score([split]), torch_backend.score([split])
            # at most the new chunk was computed (less when an earlier prompt shared its tokens)
            assert ro[0].cached_tokens >= len(split.prefix_ids) - step
            assert (ro[0].computed_tokens, ro[0].cached_tokens) == (
                rt[0].computed_tokens,
                rt[0].cached_tokens,
            )
            _assert_logits_close(whole, ro, 1e-4)
            _assert_logits_close(rt, ro, TOL)
            _assert_same_verdicts(adapter, [p], rt, ro)
            checked += 1
    assert checked >= 24
