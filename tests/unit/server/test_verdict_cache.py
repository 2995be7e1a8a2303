"""Unit tests of the verdict cache: keys, hits, TTL, LRU bound, single flight, and the Guard
applying each request's threshold (and the prompt-first priority) on top of it."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import pytest

from guardwire_backends.base import Readout, ReadoutResult, ScoreItem, ScoreResult
from guardwire_server.adapters.base import EncodedPrompt
from guardwire_server.config import resolve_settings
from guardwire_server.domain import (
    Category,
    Conversation,
    Policy,
    Role,
    Timings,
    Turn,
    VerdictLabel,
)
from guardwire_server.errors import BackendFailure, DeadlineExpired
from guardwire_server.validation import ValidClassifyRequest
from guardwire_server.verdict_cache import Lookup, Scored, VerdictCache, canonical_encoding

POLICY = Policy(categories=(Category("S1", "Violent Crimes"), Category("S2", "Fraud")))
NS = "model\x1frev\x1ffamily"


def conv(*texts: str) -> Conversation:
    roles = (Role.USER, Role.ASSISTANT)
    return Conversation(turns=tuple(Turn(roles[i % 2], t) for i, t in enumerate(texts)))


def scored(n: int = 0) -> Scored:
    item = ScoreItem(prefix_ids=(1, 2, 3), tail_ids=(4, 5, n), readouts=(Readout(-1, (7, 8)),))
    prompt = EncodedPrompt(item=item, role=Role.USER, policy=POLICY, category_codes=())
    result = ScoreResult(
        readouts=(ReadoutResult(logits=(float(n), 0.0), logsumexp=None),),
        computed_tokens=3,
        cached_tokens=3,
    )
    return Scored(prompt, result, Timings(0.01, 0.02, 4, 3, 3))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Computer:
    """A compute callable that counts its calls; ``gate`` holds it; ``fail`` makes it raise."""

    def __init__(self, value: Scored | None = None) -> None:
        self.calls = 0
        self.value = value or scored()
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def __call__(self) -> Scored:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return self.value


# -- keys --------------------------------------------------------------------------------------


def test_key_is_stable_and_separates_every_field():
    cache = VerdictCache(8, 60.0)
    base = cache.key(NS, conv("hello", "hi there"), POLICY)
    assert base == cache.key(NS, conv("hello", "hi there"), POLICY)
    others = [
        cache.key(NS, conv("hello", "hi there!"), POLICY),  # text
        cache.key(NS, conv("hello"), POLICY),  # turns / assessed role
        cache.key(NS + "x", conv("hello", "hi there"), POLICY),  # model namespace
        cache.key(NS, conv("hello", "hi there"), Policy(POLICY.categories[:1])),  # categories
        cache.key(NS, conv("hello", "hi there"), Policy(POLICY.categories, name="strict")),
    ]
    assert len({base, *others}) == len(others) + 1


def test_canonical_encoding_is_unambiguous():
    assert canonical_encoding(NS, conv("ab", "c"), POLICY) != canonical_encoding(
        NS, conv("a", "bc"), POLICY
    )
    assert canonical_encoding(NS, conv("a\x1fb"), POLICY) != canonical_encoding(
        NS, conv("a", "b"), POLICY
    )


def test_key_holds_no_text_in_the_clear_and_is_not_a_plain_hash():
    text = "my secret medical question about dosage"
    c = conv(text)
    a, b = VerdictCache(8, 60.0), VerdictCache(8, 60.0)
    key = a.key(NS, c, POLICY)
    assert len(key) == 32
    assert text.encode() not in key and b"secret" not in key
    assert key != hashlib.sha256(canonical_encoding(NS, c, POLICY)).digest()
    assert key != hashlib.sha256(text.encode()).digest()
    assert key != b.key(NS, c, POLICY), "a per-cache random secret: no cross-process hash"
    assert VerdictCache(8, 60.0, secret=b"k").key(NS, c, POLICY) == VerdictCache(
        8, 60.0, secret=b"k"
    ).key(NS, c, POLICY)


# -- hits, TTL, bound ----------------------------------------------------------------------------


async def test_a_repeat_is_a_hit_with_hit_timings():
    cache = VerdictCache(8, 60.0)
    compute = Computer()
    key = cache.key(NS, conv("hello"), POLICY)
    first, how = await cache.get_or_compute(key, compute)
    assert how is Lookup.COMPUTED and first.timings.batch_size == 4
    second, how = await cache.get_or_compute(key, compute)
    assert how is Lookup.HIT and compute.calls == 1
    assert second.result is first.result and second.prompt is first.prompt
    t = second.timings
    assert (t.batch_size, t.inference_s, t.queue_s, t.computed_tokens) == (0, 0.0, 0.0, 0)
    assert t.cached_tokens == first.prompt.item.num_tokens == 6
    assert (cache.hits, cache.misses, cache.coalesced, len(cache)) == (1, 1, 0, 1)


async def test_entries_expire_after_the_ttl():
    clock = Clock()
    cache = VerdictCache(8, 10.0, clock=clock)
    compute = Computer()
    key = cache.key(NS, conv("hello"), POLICY)
    await cache.get_or_compute(key, compute)
    clock.now += 9.9
    assert (await cache.get_or_compute(key, compute))[1] is Lookup.HIT
    clock.now += 0.2  # 10.1 s after it was stored; hits do not refresh the TTL
    assert (await cache.get_or_compute(key, compute))[1] is Lookup.COMPUTED
    assert compute.calls == 2 and cache.expirations == 1
    clock.now += 5.0
    assert (await cache.get_or_compute(key, compute))[1] is Lookup.HIT


def test_bounded_lru_evicts_the_least_recently_used():
    cache = VerdictCache(2, 60.0)
    ka, kb, kc = (cache.key(NS, conv(t), POLICY) for t in "abc")
    cache.put(ka, scored(1))
    cache.put(kb, scored(2))
    assert cache.get(ka) is not None  # a is now the most recent
    cache.put(kc, scored(3))
    assert len(cache) == 2 and cache.evictions == 1
    assert cache.get(kb) is None
    assert cache.get(ka) is not None and cache.get(kc) is not None


@pytest.mark.parametrize(("entries", "ttl"), [(0, 1.0), (-1, 1.0), (4, 0.0), (4, -1.0)])
def test_invalid_bounds_are_refused(entries, ttl):
    with pytest.raises(ValueError):
        VerdictCache(entries, ttl)


# -- single flight -----------------------------------------------------------------------------


async def test_concurrent_identical_requests_share_one_inference():
    cache = VerdictCache(8, 60.0)
    compute = Computer()
    compute.gate = asyncio.Event()
    key = cache.key(NS, conv("hello"), POLICY)
    tasks = [asyncio.create_task(cache.get_or_compute(key, compute)) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert compute.calls == 1 and cache.in_flight == 1
    compute.gate.set()
    results = await asyncio.gather(*tasks)
    assert compute.calls == 1 and cache.in_flight == 0
    assert sorted(how.value for _, how in results) == ["coalesced"] * 4 + ["computed"]
    for value, how in results:
        if how is Lookup.COALESCED:
            assert value.timings.batch_size == 0 and value.timings.queue_s > 0
    assert cache.coalesced == 4 and cache.misses == 1


async def test_a_failed_leader_does_not_fail_the_waiters():
    cache = VerdictCache(8, 60.0)
    key = cache.key(NS, conv("hello"), POLICY)
    leader = Computer()
    leader.gate = asyncio.Event()
    leader.fail = BackendFailure("boom")
    follower = Computer()
    t_leader = asyncio.create_task(cache.get_or_compute(key, leader))
    await asyncio.sleep(0)
    t_follower = asyncio.create_task(cache.get_or_compute(key, follower))
    await asyncio.sleep(0.01)
    leader.gate.set()
    with pytest.raises(BackendFailure):
        await t_leader
    value, how = await t_follower
    assert how is Lookup.COMPUTED and follower.calls == 1 and value is follower.value
    assert len(cache) == 1


async def test_a_cancelled_leader_hands_over_to_a_waiter():
    cache = VerdictCache(8, 60.0)
    key = cache.key(NS, conv("hello"), POLICY)
    leader = Computer()
    leader.gate = asyncio.Event()
    t_leader = asyncio.create_task(cache.get_or_compute(key, leader))
    await asyncio.sleep(0)
    t_follower = asyncio.create_task(cache.get_or_compute(key, Computer()))
    await asyncio.sleep(0.01)
    t_leader.cancel()
    _, how = await asyncio.wait_for(t_follower, 2)
    assert how is Lookup.COMPUTED
    assert cache.in_flight == 0


async def test_a_waiter_gives_up_at_its_deadline():
    cache = VerdictCache(8, 60.0)
    key = cache.key(NS, conv("hello"), POLICY)
    leader = Computer()
    leader.gate = asyncio.Event()
    t_leader = asyncio.create_task(cache.get_or_compute(key, leader))
    await asyncio.sleep(0)
    with pytest.raises(DeadlineExpired):
        await cache.get_or_compute(key, Computer(), deadline=time.monotonic() + 0.02)
    leader.gate.set()
    await t_leader


# -- the Guard on top of it -------------------------------------------------------------------


@pytest.fixture(scope="module")
async def _guard(tiny_model_dir: Path):
    """A real Guard (adapter, batcher) over the deterministic fake backend, built once."""
    from guardwire_server.loading import build_guard

    settings = resolve_settings(
        flags={"backend": "fake", "verdict_cache_entries": 16, "max_wait_ms": 1.0}, env={}
    )
    guard = build_guard(settings, tiny_model_dir)
    assert isinstance(guard.verdict_cache, VerdictCache) and guard.prioritize_prompts
    await guard.batcher.start()
    try:
        yield guard
    finally:
        await guard.batcher.stop()


@pytest.fixture
def fake_guard(_guard, monkeypatch: pytest.MonkeyPatch):
    """The module's Guard with a fresh cache; attribute changes are undone after the test."""
    monkeypatch.setattr(_guard, "verdict_cache", VerdictCache(16, 60.0))
    monkeypatch.setattr(_guard, "prioritize_prompts", True)
    monkeypatch.setattr(_guard.backend, "delay_s", 0.0)
    return _guard


async def test_guard_applies_each_requests_threshold_on_a_hit(fake_guard):
    backend = fake_guard.backend
    c = conv("How do I bake bread?")
    policy = fake_guard.catalog.default
    calls = len(backend.batch_sizes)
    first = await fake_guard.score(c, policy, threshold=None, deadline=None)
    assert len(backend.batch_sizes) == calls + 1 and first.timings.batch_size >= 1
    score = first.unsafe_score
    low = await fake_guard.score(c, policy, threshold=max(1e-6, score / 2), deadline=None)
    high = await fake_guard.score(c, policy, threshold=min(1.0, score + 1e-3), deadline=None)
    assert len(backend.batch_sizes) == calls + 1, "repeats must not reach the backend"
    assert low.unsafe_score == high.unsafe_score == score
    assert low.label is VerdictLabel.UNSAFE and high.label is VerdictLabel.SAFE
    assert low.threshold != high.threshold
    assert low.timings.batch_size == 0 and low.timings.computed_tokens == 0
    assert low.timings.cached_tokens == first.timings.computed_tokens + first.timings.cached_tokens
    assert fake_guard.verdict_cache.hits == 2
    other = await fake_guard.score(
        conv("How do I bake a cake?"), policy, threshold=None, deadline=None
    )
    assert len(backend.batch_sizes) == calls + 2 and other.timings.batch_size >= 1


async def test_guard_coalesces_concurrent_identical_requests(fake_guard, monkeypatch):
    monkeypatch.setattr(fake_guard.backend, "delay_s", 0.05)
    c = conv("Identical request sent five times at once")
    calls = len(fake_guard.backend.batch_sizes)
    verdicts = await asyncio.gather(
        *(fake_guard.score(c, fake_guard.catalog.default, threshold=0.5, deadline=None)
          for _ in range(5))
    )  # fmt: skip
    assert len(fake_guard.backend.batch_sizes) == calls + 1
    assert len({v.unsafe_score for v in verdicts}) == 1
    assert sorted(v.timings.batch_size for v in verdicts) == [0, 0, 0, 0, 1]


@pytest.mark.parametrize(
    ("prioritize", "texts", "expected"),
    [
        (True, ("hello",), 1),
        (True, ("hello", "hi"), 0),
        (False, ("hello",), 0),
        (False, ("hello", "hi"), 0),
    ],
)
async def test_classify_gives_prompt_checks_priority(
    fake_guard, monkeypatch, prioritize, texts, expected
):
    seen: list[int] = []
    submit = fake_guard.batcher.submit

    async def recording_submit(item, *, deadline, priority=0, **kw):
        seen.append(priority)
        return await submit(item, deadline=deadline, priority=priority, **kw)

    monkeypatch.setattr(fake_guard.batcher, "submit", recording_submit)
    monkeypatch.setattr(fake_guard, "prioritize_prompts", prioritize)
    monkeypatch.setattr(fake_guard, "verdict_cache", None)
    request = ValidClassifyRequest(
        conversation=conv(*texts),
        policy=fake_guard.catalog.default,
        threshold=None,
        include_category_scores=False,
    )
    await fake_guard.classify(request, deadline=None)
    assert seen == [expected]
    seen.clear()
    await fake_guard.classify(request, deadline=None, priority=5)  # an explicit one wins
    assert seen == [5]


def test_settings_have_the_cache_and_priority_options():
    s = resolve_settings(env={})
    assert (s.verdict_cache_entries, s.verdict_cache_ttl_s, s.prioritize_prompts) == (
        0,
        60.0,
        True,
    )
    s = resolve_settings(
        env={
            "GUARDWIRE_VERDICT_CACHE_ENTRIES": "100",
            "GUARDWIRE_VERDICT_CACHE_TTL_S": "5",
            "GUARDWIRE_PRIORITIZE_PROMPTS": "false",
        }
    )
    assert (s.verdict_cache_entries, s.verdict_cache_ttl_s, s.prioritize_prompts) == (
        100,
        5.0,
        False,
    )
