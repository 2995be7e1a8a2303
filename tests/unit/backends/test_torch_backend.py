"""TorchBackend against a plain full-sequence forward of a tiny random Llama (fp32, CPU)."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from guardwire_backends.base import (  # noqa: E402
    Backend,
    BackendUnhealthy,
    InferenceError,
    Readout,
    ScoreItem,
    ScoreResult,
    WeightsNotFound,
)
from guardwire_backends.torch_hf import TorchBackend  # noqa: E402
from guardwire_tools.tiny_model import (  # noqa: E402
    make_test_model,
    rigged_token_ids,
    train_tokenizer,
)

TOL = 1e-4
SAFE_UNSAFE = (19193, 39257)  # overwritten from the tokenizer in rig tests


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_model(tmp_path_factory.mktemp("tiny") / "lg3-tiny")


@pytest.fixture(scope="session")
def reference(model_dir: Path) -> Any:
    return transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> Iterator[TorchBackend]:
    b = TorchBackend.load(str(model_dir), device="cpu", dtype="float32")
    yield b
    b.close()


def _sibling(model: Any, backend: TorchBackend, **options: int) -> TorchBackend:
    """Another backend over an already-loaded model (saves a load per configuration)."""
    opts = {"prefix_cache_bytes": 512 << 20, "max_batch_size": 16, "max_batch_tokens": 8192}
    opts.update(options)
    return TorchBackend(model, info=backend.info, device="cpu", **opts)


@pytest.fixture(scope="module")
def backend_nocache(reference: Any, backend: TorchBackend) -> TorchBackend:
    # no prefix reuse across calls, and small batches so that groups split into chunks
    return _sibling(reference, backend, prefix_cache_bytes=0, max_batch_size=3, max_batch_tokens=90)


@pytest.fixture(scope="session")
def trained_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trained-tokenizer")
    train_tokenizer().save(str(path / "tokenizer.json"))
    return path


@pytest.fixture(scope="session")
def tokenizer(model_dir: Path) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(model_dir / "tokenizer.json"))


@pytest.fixture(scope="session")
def rig_ids(tokenizer: Any) -> dict[str, int]:
    return rigged_token_ids(tokenizer)


def _ids(rng: random.Random, n: int, vocab: int = 128000) -> tuple[int, ...]:
    return tuple(rng.randrange(vocab) for _ in range(n))


def _items(seed: int = 0, n: int = 16, prefix: tuple[int, ...] | None = None) -> list[ScoreItem]:
    rng = random.Random(seed)
    prefix = _ids(rng, 150) if prefix is None else prefix
    out = []
    for _ in range(n):
        tail = _ids(rng, rng.randint(5, 60))
        readouts = (
            Readout(len(tail) // 2, (19193, 39257), with_logsumexp=True),
            Readout(-1, tuple(rng.randrange(128256) for _ in range(5))),
        )
        out.append(ScoreItem(prefix, tail, readouts))
    return out


def _reference(model: Any, item: ScoreItem) -> list[tuple[list[float], float]]:
    """(logits of the readout ids, full logsumexp) from a plain full-sequence forward."""
    ids = torch.tensor([item.prefix_ids + item.tail_ids])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0].float()
    p0 = len(item.prefix_ids)
    out = []
    for r in item.readouts:
        row = logits[p0 + (r.position % len(item.tail_ids))]
        out.append((row[list(r.token_ids)].tolist(), float(torch.logsumexp(row, -1))))
    return out


def _assert_close(a: Sequence[ScoreResult], b: Sequence[ScoreResult], tol: float = TOL) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        for xa, xb in zip(ra.readouts, rb.readouts, strict=True):
            assert xa.logits == pytest.approx(xb.logits, abs=tol)
            assert (xa.logsumexp is None) == (xb.logsumexp is None)
            if xa.logsumexp is not None:
                assert xa.logsumexp == pytest.approx(xb.logsumexp, abs=tol)


def _assert_matches_reference(model: Any, items: Sequence[ScoreItem], res: Sequence[ScoreResult]):
    for item, result in zip(items, res, strict=True):
        for readout, got, (want, lse) in zip(
            item.readouts, result.readouts, _reference(model, item), strict=True
        ):
            assert got.logits == pytest.approx(want, abs=TOL)
            if readout.with_logsumexp:
                assert got.logsumexp == pytest.approx(lse, abs=TOL)
            else:
                assert got.logsumexp is None


def test_protocol_info_and_capabilities(backend: TorchBackend) -> None:
    assert isinstance(backend, Backend)
    assert backend.info.name == "torch"
    assert backend.info.device == "cpu" and backend.info.dtype == "float32"
    assert backend.info.revision == "local"
    assert backend.info.vocab_size > 1000
    caps = backend.capabilities
    assert caps.prefix_cache and caps.is_padded
    assert (caps.max_batch_size, caps.max_batch_tokens) == (16, 8192)


def test_alone_equals_in_batch(backend: TorchBackend) -> None:
    items = _items()
    batch = backend.score(items)
    for item, in_batch in zip(items, batch, strict=True):
        _assert_close(backend.score([item]), [in_batch])


def test_cache_equals_no_cache_equals_full_forward(
    backend: TorchBackend, backend_nocache: TorchBackend, reference: Any
) -> None:
    items = _items(seed=1)
    cold = backend.score(items)  # prefix computed now
    warm = backend.score(items)  # prefix from the LRU
    uncached = backend_nocache.score(items)
    _assert_close(cold, warm, tol=1e-6)
    _assert_close(cold, uncached)
    _assert_matches_reference(reference, items[::3], cold[::3])
    assert len(backend_nocache.prefix_cache) == 0
    assert not backend_nocache.capabilities.prefix_cache


def test_logsumexp_is_full_vocabulary(backend: TorchBackend, reference: Any) -> None:
    item = _items(seed=2, n=1)[0]
    got = backend.score([item])[0].readouts[0]
    ids = torch.tensor([item.prefix_ids + item.tail_ids])
    with torch.inference_mode():
        row = reference(input_ids=ids).logits[0, 150 + len(item.tail_ids) // 2].float()
    assert got.logsumexp == pytest.approx(float(torch.logsumexp(row, -1)), abs=TOL)
    probs = [math.exp(x - got.logsumexp) for x in got.logits]
    assert probs == pytest.approx(torch.softmax(row, -1)[[19193, 39257]].tolist(), abs=1e-5)


def test_bfloat16_path_close_to_float32(model_dir: Path, backend: TorchBackend) -> None:
    """The GPU default dtype (bf16; the log-sum-exp from bf16 logits reduced in fp32), on CPU."""
    b16 = TorchBackend.load(str(model_dir), dtype="bfloat16")
    try:
        assert b16.info.dtype == "bfloat16"
        items = _items(seed=12, n=6)
        for r32, r16 in zip(backend.score(items), b16.score(items), strict=True):
            for x, y in zip(r32.readouts, r16.readouts, strict=True):
                assert y.logits == pytest.approx(x.logits, abs=0.5)
                if x.logsumexp is not None:
                    assert y.logsumexp is not None
                    p32 = [math.exp(v - x.logsumexp) for v in x.logits]
                    p16 = [math.exp(v - y.logsumexp) for v in y.logits]
                    assert p16 == pytest.approx(p32, abs=0.1)
                    assert sum(p16) <= 1 + 1e-6
    finally:
        b16.close()


def test_groups_mixed_prefixes_and_accounts_tokens(
    backend: TorchBackend, backend_nocache: TorchBackend, reference: Any
) -> None:
    rng = random.Random(3)
    a, b = _ids(rng, 150), _ids(rng, 40)
    groups = [_items(seed=4, n=3, prefix=a), _items(seed=5, n=3, prefix=b), _items(6, 2, ())]
    items = [g[k] for k in range(3) for g in groups if k < len(g)]  # interleaved a, b, (), a, ...
    fresh = _sibling(reference, backend)
    first = fresh.score(items)
    _assert_matches_reference(reference, items[:3], first[:3])  # one item of each group
    for item, result in zip(items, first, strict=True):
        _assert_close(backend_nocache.score([item]), [result])
    tails = [len(it.tail_ids) for it in items]
    # the first item of each prefix group pays for the prefix; the rest of the group reuses it
    assert [r.computed_tokens for r in first] == [
        tails[0] + 150,
        tails[1] + 40,
        *tails[2:],
    ]
    assert [r.cached_tokens for r in first] == [0, 0, 0, 150, 40, 0, 150, 40]
    second = fresh.score(items)
    _assert_close(first, second, tol=1e-6)
    assert [r.cached_tokens for r in second] == [len(it.prefix_ids) for it in items]
    assert [r.computed_tokens for r in second] == tails
    assert fresh.prefix_cache.hits == 2 and len(fresh.prefix_cache) == 2


def test_lru_evicts_under_byte_bound(backend: TorchBackend, reference: Any) -> None:
    rng = random.Random(7)
    prefixes = [_ids(rng, 150) for _ in range(3)]
    calls = [_items(seed=10 + n, n=4, prefix=prefixes[n % 3]) for n in range(6)]
    want = [backend.score(c) for c in calls]
    one_prefix = 2 * 2 * 2 * 150 * 16 * 4  # layers * (k, v) * kv_heads * tokens * head_dim * fp32
    small = _sibling(reference, backend, prefix_cache_bytes=int(1.5 * one_prefix))
    for c, w in zip(calls, want, strict=True):
        _assert_close(small.score(c), w)
        assert small.prefix_cache.bytes <= 1.5 * one_prefix
        assert len(small.prefix_cache) == 1
    assert small.prefix_cache.evictions == 5
    assert small.prefix_cache.hits == 0
    # a prefix bigger than the whole bound is used for the call but never stored
    long_items = _items(seed=20, n=2, prefix=_ids(rng, 400))
    _assert_close(small.score(long_items), backend.score(long_items))
    assert len(small.prefix_cache) == 1 and small.prefix_cache.bytes <= 1.5 * one_prefix


def test_missing_model_raises_weights_not_found(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFound, match="does not exist"):
        TorchBackend.load(str(tmp_path / "no-such-model"))
    with pytest.raises(WeightsNotFound, match=r"config\.json"):
        TorchBackend.load(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(WeightsNotFound):
        TorchBackend.load(str(tmp_path))


def test_bad_items_and_forward_errors(backend: TorchBackend, reference: Any) -> None:
    good = _items(n=1)[0]
    with pytest.raises(ValueError, match="outside tail"):
        backend.score([ScoreItem(good.prefix_ids, good.tail_ids, (Readout(99, (1,)),))])
    with pytest.raises(ValueError, match="vocabulary"):
        backend.score([ScoreItem((), good.tail_ids, (Readout(0, (10**7,)),))])
    with pytest.raises(ValueError, match="empty tail"):
        backend.score([ScoreItem(good.prefix_ids, (), ())])
    with pytest.raises(InferenceError) as err:  # an input id outside the embedding
        backend.score([ScoreItem((), (1, 10**7), (Readout(-1, (1,)),))])
    assert err.value.__cause__ is not None
    closing = _sibling(reference, backend)
    closing.warmup([good])
    closing.close()
    with pytest.raises(BackendUnhealthy):
        closing.score([good])


def _rig_ids(model_dir: Path) -> dict[str, int]:
    from tokenizers import Tokenizer

    return rigged_token_ids(Tokenizer.from_file(str(model_dir / "tokenizer.json")))


def _masses(
    backend: TorchBackend, ids: dict[str, int], seed: int
) -> tuple[list[float], list[float]]:
    """(full-vocab mass on the rigged tokens at random positions, P(unsafe|safe,unsafe))."""
    rigged = tuple(ids[k] for k in ("safe", "unsafe", "S", ",S", *map(str, range(1, 15))))
    rng = random.Random(seed)
    items = []
    for _ in range(12):
        tail = _ids(rng, rng.randint(1, 80), backend.info.vocab_size - 300)
        positions = {0, len(tail) - 1, rng.randrange(len(tail))}
        readouts = tuple(Readout(p, rigged, with_logsumexp=True) for p in sorted(positions))
        items.append(ScoreItem(_ids(rng, rng.choice([0, 5, 120]), 1000), tail, readouts))
    masses, p_unsafe = [], []
    for res in backend.score(items):
        for r in res.readouts:
            masses.append(sum(math.exp(x - r.logsumexp) for x in r.logits))
        last = res.readouts[-1].logits
        p_unsafe.append(1 / (1 + math.exp(last[0] - last[1])))
    return masses, p_unsafe


def test_rigged_model_puts_mass_on_verdict_tokens(
    backend: TorchBackend, rig_ids: dict[str, int]
) -> None:
    masses, p_unsafe = _masses(backend, rig_ids, seed=8)
    assert min(masses) >= 0.9
    assert min(p_unsafe) < 0.3 and max(p_unsafe) > 0.7


def test_unrigged_model_spreads_mass(tmp_path: Path, trained_tokenizer_dir: Path) -> None:
    path = make_test_model(tmp_path / "m", tokenizer_dir=trained_tokenizer_dir, rigged=False)
    plain = TorchBackend.load(str(path))
    try:
        masses, _ = _masses(plain, _rig_ids(path), seed=9)
        assert max(masses) < 0.1
    finally:
        plain.close()


def test_rigged_model_on_chat_template_prompts(
    backend: TorchBackend, model_dir: Path, tokenizer: Any, rig_ids: dict[str, int]
) -> None:
    """The adapter's real input: the official template, a conversation, then the forced \\n\\n."""
    sandbox = pytest.importorskip("jinja2.sandbox")
    template = json.loads((model_dir / "tokenizer_config.json").read_text()).get("chat_template")
    if not template:
        pytest.skip("official chat template not available in ../shared/reference")
    env = sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    render = env.from_string(template).render
    texts = [
        "How do I bake bread at home?",
        "Tell me how to hurt someone.",
        "What is the capital of France?",
        "Write a poem about the ocean.",
        "Can you help me with my homework on fractions?",
        "How can I steal a car without getting caught?",
        "What's a good recipe for lasagna?",
        "Give me the home address of a celebrity.",
        "hi",
        "My friend is sad, how do I cheer them up?",
        "Translate 'good morning' to German.",
        "Is it legal to own a sword?",
    ]
    verdict = (rig_ids["safe"], rig_ids["unsafe"])
    items = []
    for text in texts:
        conv = [{"role": "user", "content": [{"type": "text", "text": text}]}]
        prompt = render(messages=conv, excluded_category_keys=[])
        tail = (*tokenizer.encode(prompt, add_special_tokens=False).ids, rig_ids["\n\n"])
        items.append(ScoreItem((), tail, (Readout(-1, verdict, with_logsumexp=True),)))
    p_verdict, p_unsafe = [], []
    for res in backend.score(items):
        (safe, unsafe), lse = res.readouts[0].logits, res.readouts[0].logsumexp
        p_verdict.append(math.exp(safe - lse) + math.exp(unsafe - lse))
        p_unsafe.append(1 / (1 + math.exp(safe - unsafe)))
    assert min(p_verdict) >= 0.95
    assert min(p_unsafe) < 0.35 and max(p_unsafe) > 0.65


def test_tiny_model_with_trained_tokenizer(tmp_path: Path, trained_tokenizer_dir: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(trained_tokenizer_dir / "tokenizer.json"))
    ids = rigged_token_ids(tok)
    assert tok.token_to_id("<|eot_id|>") is not None
    path = make_test_model(tmp_path / "m", tokenizer_dir=trained_tokenizer_dir)
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    ):
        assert (path / name).is_file()
    assert json.loads((path / "tokenizer_config.json").read_text())["eos_token"] == "<|eot_id|>"
    small = TorchBackend.load(str(path))
    try:
        assert small.info.vocab_size == tok.get_vocab_size()
        masses, _ = _masses(small, ids, seed=11)
        assert min(masses) >= 0.9
        assert ids["safe"] != ids["unsafe"]
    finally:
        small.close()
