"""FakeBackend: deterministic, batch-independent, causal, with trigger/failure/delay knobs."""

from __future__ import annotations

import math
import random
import time

import pytest

from guardwire_backends.base import (
    Backend,
    BackendUnhealthy,
    InferenceError,
    Readout,
    ScoreItem,
    ScoreResult,
)
from guardwire_backends.fake import LG3_SAFE_ID, LG3_UNSAFE_ID, FakeBackend

VERDICT = (LG3_SAFE_ID, LG3_UNSAFE_ID)
CATEGORIES = (50, 16, 17, 605)  # "S", "1", "2", "10"
TRIGGER = (1111, 2222)


def _items(seed: int = 0, n: int = 8) -> list[ScoreItem]:
    rng = random.Random(seed)
    prefixes = [tuple(rng.randrange(1000) for _ in range(20)) for _ in range(2)] + [()]
    out = []
    for k in range(n):
        tail = tuple(rng.randrange(3000, 100000) for _ in range(rng.randint(3, 30)))
        readouts = (Readout(-1, VERDICT, with_logsumexp=True), Readout(1, CATEGORIES))
        out.append(ScoreItem(prefixes[k % 3], tail, readouts))
    return out


def _p_unsafe(result: ScoreResult) -> float:
    safe, unsafe = result.readouts[0].logits
    return 1 / (1 + math.exp(safe - unsafe))


def test_protocol_and_info() -> None:
    fake = FakeBackend("some/model", vocab_size=128256, max_batch_size=4)
    assert isinstance(fake, Backend)
    assert fake.info.name == "fake" and fake.info.model_ref == "some/model"
    assert fake.info.vocab_size == 128256
    assert fake.capabilities.max_batch_size == 4 and fake.capabilities.prefix_cache


def test_deterministic_across_instances_and_seeded() -> None:
    items = _items()
    a, b = FakeBackend().score(items), FakeBackend().score(items)
    assert [r.readouts for r in a] == [r.readouts for r in b]
    c = FakeBackend(seed=1).score(items)
    assert [r.readouts for r in a] != [r.readouts for r in c]


def test_batch_independent_and_causal() -> None:
    fake = FakeBackend(prefix_cache=False)
    items = _items(n=9)
    together = fake.score(items)
    for item, res in zip(items, together, strict=True):
        assert fake.score([item])[0].readouts == res.readouts
    # the readout at position 1 sees only tail[:2]: changing later tokens does not move it
    item = items[0]
    changed = ScoreItem(item.prefix_ids, item.tail_ids[:2] + (7,) * 5, item.readouts)
    assert fake.score([changed])[0].readouts[1] == together[0].readouts[1]
    assert fake.score([changed])[0].readouts[0] != together[0].readouts[0]


def test_logsumexp_is_consistent_and_verdict_dominates() -> None:
    results = FakeBackend().score(_items(n=30))
    masses = []
    for res in results:
        r = res.readouts[0]
        assert r.logsumexp is not None and res.readouts[1].logsumexp is None
        probs = [math.exp(x - r.logsumexp) for x in r.logits]
        assert 0 < sum(probs) < 1
        masses.append(sum(probs))
    assert min(masses) >= 0.9
    p = [_p_unsafe(r) for r in results]
    assert min(p) < 0.3 and max(p) > 0.7  # varies with the input


def test_unsafe_trigger() -> None:
    fake = FakeBackend(unsafe_trigger=TRIGGER)
    base = _items(n=6)
    hit = [ScoreItem(it.prefix_ids, it.tail_ids + TRIGGER + (5, 6), it.readouts) for it in base]
    assert all(_p_unsafe(r) > 0.999 for r in fake.score(hit))
    assert min(_p_unsafe(r) for r in fake.score(base)) < 0.9
    # the trigger counts only once it is inside the tail up to the readout position
    split = [ScoreItem((), (1111, 9, 2222), (Readout(-1, VERDICT),))]
    assert _p_unsafe(fake.score(split)[0]) == _p_unsafe(FakeBackend().score(split)[0])


def test_fail_when_token_or_callable() -> None:
    items = _items(n=4)
    poisoned = [*items, ScoreItem((), (42, 43), (Readout(0, VERDICT),))]
    fake = FakeBackend(fail_when=42)
    assert len(fake.score(items)) == 4
    with pytest.raises(InferenceError, match="42"):
        fake.score(poisoned)
    fake.fail_when = lambda batch: len(batch) > 3
    with pytest.raises(InferenceError):
        fake.score(items)
    assert len(fake.score(items[:3])) == 3
    assert fake.batch_sizes == [4, 5, 4, 3]


def test_delay_per_batch() -> None:
    fake = FakeBackend(delay_s=0.05)
    start = time.perf_counter()
    fake.score(_items(n=5))
    assert time.perf_counter() - start >= 0.05


def test_token_accounting_with_and_without_cache() -> None:
    items = _items(n=6)  # prefixes a, b, (), a, b, ()
    fake = FakeBackend()
    first, second = fake.score(items), fake.score(items)
    t = [len(it.tail_ids) for it in items]
    assert [r.computed_tokens for r in first] == [t[0] + 20, t[1] + 20, t[2], t[3], t[4], t[5]]
    assert [r.cached_tokens for r in first] == [0, 0, 0, 20, 20, 0]
    assert [r.computed_tokens for r in second] == t
    assert [r.cached_tokens for r in second] == [20, 20, 0, 20, 20, 0]
    nocache = FakeBackend(prefix_cache=False)
    nocache.score(items)
    assert [r.cached_tokens for r in nocache.score(items)] == [0, 0, 0, 20, 20, 0]
    for res, item in zip(first, items, strict=True):
        assert res.computed_tokens + res.cached_tokens == item.num_tokens


def test_validation_and_close() -> None:
    fake = FakeBackend(vocab_size=1000, safe_id=1, unsafe_id=2)
    with pytest.raises(ValueError, match="outside tail"):
        fake.score([ScoreItem((), (1, 2), (Readout(2, (1,)),))])
    with pytest.raises(ValueError, match="vocabulary"):
        fake.score([ScoreItem((), (1, 2), (Readout(-2, (1000,)),))])
    with pytest.raises(ValueError):
        FakeBackend(vocab_size=1000, safe_id=5000, unsafe_id=2)
    fake = FakeBackend()
    fake.warmup(_items(n=2))
    fake.close()
    with pytest.raises(BackendUnhealthy):
        fake.score(_items(n=1))
