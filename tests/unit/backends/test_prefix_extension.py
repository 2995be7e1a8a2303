"""Longest-prefix reuse in the backends' prefix cache (``PrefixCache.fetch``).

A stream's checks send the same conversation, growing, as the item prefix. A miss must compute
only the tokens past the longest cached prefix, on top of that entry's KV, and give the results
of a full recompute (fp32, |delta| <= 1e-4); entries extended by a longer one go first when the
byte bound bites, and eviction only ever costs a recompute.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from guardwire_backends import torch_hf
from guardwire_backends.base import Readout, ScoreItem, ScoreResult
from guardwire_backends.torch_hf import PrefixCache

TOL = 1e-4
VOCAB = 128000
VERDICT = (19193, 39257)


# -- the cache alone (no model) ----------------------------------------------------------------


class SizedCache(PrefixCache):
    """Values are their own byte size."""

    def _size(self, kv: Any) -> int:
        return int(kv)


def _fill(cache: PrefixCache, *keys: tuple[int, ...]) -> None:
    for key in keys:
        assert cache.put(key, 10)


def test_longest_prefix_is_the_longest_exact_token_prefix() -> None:
    cache = SizedCache(1000)
    _fill(cache, (1, 2), (1, 2, 3), (1, 2, 3, 4, 5), (1, 2, 9, 9), (7, 2, 3, 4))
    found = cache.longest_prefix((1, 2, 3, 4, 6, 7))
    assert found is not None and found[0] == (1, 2, 3)
    assert cache.longest_prefix((1, 2, 3, 4, 5))[0] == (1, 2, 3)  # proper prefixes only
    assert cache.longest_prefix((1, 2, 3, 4, 5, 0))[0] == (1, 2, 3, 4, 5)
    assert cache.longest_prefix((1,)) is None
    assert cache.longest_prefix((2, 3, 4, 5)) is None
    assert cache.longest_prefix(()) is None
    assert cache.extensions == 3


def test_fetch_computes_only_past_the_longest_prefix() -> None:
    calls: list[tuple[tuple[int, ...], Any, int]] = []

    def compute(ids: tuple[int, ...], past: Any, past_len: int) -> int:
        calls.append((ids, past, past_len))
        return 10

    cache = SizedCache(1000)
    assert cache.fetch((1, 2, 3), compute) == (10, 0)
    assert cache.fetch((1, 2, 3, 4, 5), compute) == (10, 3)
    assert cache.fetch((1, 2, 3, 4, 5), compute) == (10, 5)  # exact hit: nothing computed
    assert calls == [((1, 2, 3), None, 0), ((4, 5), 10, 3)]
    off = SizedCache(0)
    assert off.fetch((1, 2), compute) == (10, 0) and len(off) == 0


def test_chain_links_are_evicted_first_shared_roots_are_kept() -> None:
    cache = SizedCache(40)
    root = (1, 2, 3)
    _fill(cache, root)
    cache.get(root)  # hit directly (unary traffic): a shared root, not a chain link
    a1, a2 = (*root, 10), (*root, 10, 11)
    b1 = (*root, 20)
    for key in (a1, b1, a2):
        assert cache.longest_prefix(key) is not None
        cache.put(key, 10)
    # a1 was extended once (by a2) and never used otherwise: it goes before the older b1
    _fill(cache, (99,))
    assert a1 not in cache and all(k in cache for k in (root, b1, a2, (99,)))
    cache.get(root)
    _fill(cache, (98,))  # then plain LRU: b1 is the least recently used
    assert b1 not in cache and root in cache
    assert cache.evictions == 2 and cache.bytes == 40


def test_root_extended_by_many_streams_stays() -> None:
    cache = SizedCache(30)
    root = (5, 6)
    _fill(cache, root)
    for s in range(6):  # six streams start from the root, each a two-link chain
        first = (*root, 100 + s)
        assert cache.longest_prefix(first)[0] == root
        cache.put(first, 10)
        assert cache.longest_prefix((*first, 7))[0] == first
        cache.put((*first, 7), 10)
    assert root in cache  # extended by several streams: touched, not demoted
    assert cache.bytes <= 30


def test_fingerprint_collisions_cost_a_comparison_never_a_wrong_base(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch_hf, "_FP_MOD", 1)  # every fingerprint is 0
    cache = SizedCache(1000)
    _fill(cache, (1, 2), (3, 4), (1, 2, 3))
    found = cache.longest_prefix((3, 4, 5, 6))
    assert found is None or found[0] == (3, 4)
    found = cache.longest_prefix((1, 2, 3, 4))
    assert found is not None and found[0] == (1, 2, 3)
    for key in ((1, 2), (3, 4), (1, 2, 3)):
        cache._drop(key)
    assert not cache._index and not cache._lengths and cache.bytes == 0


def test_put_replaces_and_clear_resets() -> None:
    cache = SizedCache(100)
    _fill(cache, (1, 2), (1, 2))
    assert len(cache) == 1 and cache.bytes == 10
    assert not cache.put((3,), 101)
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0 and cache.longest_prefix((1, 2, 3)) is None


# -- the torch backend --------------------------------------------------------------------------

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from guardwire_backends.torch_hf import TorchBackend  # noqa: E402


@pytest.fixture(scope="module")
def base(tiny_model_dir: Path) -> Iterator[TorchBackend]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny forwards: one thread is faster on a shared machine
    b = TorchBackend.load(str(tiny_model_dir), device="cpu", dtype="float32")
    yield b
    b.close()
    torch.set_num_threads(before)


def _sibling(base: TorchBackend, cache_bytes: int) -> TorchBackend:
    return TorchBackend(
        base._model,
        info=base.info,
        device="cpu",
        prefix_cache_bytes=cache_bytes,
        max_batch_size=16,
        max_batch_tokens=8192,
    )


POLICY = tuple(random.Random(0).randrange(VOCAB) for _ in range(50))


def _stream(seed: int, root: int = 70, steps: int = 6, step: int = 16) -> list[ScoreItem]:
    """Checks of one growing conversation: prefix = the policy + the conversation so far but a
    margin, tail = the margin + an assessment suffix, as ``encode(..., cache_body=True)``."""
    rng = random.Random(seed)
    text = [*POLICY, *(rng.randrange(VOCAB) for _ in range(root - 50 + steps * step + 4))]
    suffix = tuple(rng.randrange(VOCAB) for _ in range(12))
    items = []
    for k in range(steps):
        cut = root + k * step
        tail = (*text[cut : cut + 4], *suffix)
        readouts = (Readout(len(tail) - 3, VERDICT, with_logsumexp=True), Readout(-1, (7, 8, 9)))
        items.append(ScoreItem(tuple(text[:cut]), tail, readouts))
    return items


def _close(got: Sequence[ScoreResult], want: Sequence[ScoreResult]) -> None:
    for g, w in zip(got, want, strict=True):
        for rg, rw in zip(g.readouts, w.readouts, strict=True):
            assert rg.logits == pytest.approx(rw.logits, abs=TOL)
            assert (rg.logsumexp is None) == (rw.logsumexp is None)
            if rw.logsumexp is not None:
                assert rg.logsumexp == pytest.approx(rw.logsumexp, abs=TOL)


def test_chain_equals_full_recompute_and_computes_only_new_tokens(base: TorchBackend) -> None:
    cached, nocache = _sibling(base, 256 << 20), _sibling(base, 0)
    forwards: list[int] = []
    decoder = cached._decoder

    def counting(**kw: Any) -> Any:
        forwards.append(kw["input_ids"].shape[1])
        return decoder(**kw)

    cached._decoder = counting
    items = _stream(1)
    prev = 0
    for item in items:
        forwards.clear()
        got, want = cached.score([item]), nocache.score([item])
        # one forward: the new prefix tokens and the tail together
        assert forwards == [len(item.prefix_ids) - prev + len(item.tail_ids)]
        _close(got, want)
        assert want[0].computed_tokens == item.num_tokens and want[0].cached_tokens == 0
        p = len(item.prefix_ids)
        assert got[0].cached_tokens == prev  # the previous check's prefix, from the cache
        assert got[0].computed_tokens == p - prev + len(item.tail_ids)
        assert got[0].computed_tokens + got[0].cached_tokens == item.num_tokens
        prev = p
    assert cached.prefix_cache.extensions == len(items) - 1


def test_policy_root_then_stream_and_same_batch_chain(base: TorchBackend) -> None:
    cached, nocache = _sibling(base, 256 << 20), _sibling(base, 0)
    items = _stream(2)
    root = ScoreItem(POLICY, items[0].tail_ids, items[0].readouts)
    cached.score([root])  # the policy prefix, cached by a unary request
    first = cached.score([items[0]])[0]
    assert first.cached_tokens == 50  # the stream's first check extends the policy prefix
    # several checks of one stream in one batch, in any order: each extends the previous one
    batch = [items[3], items[1], items[2]]
    got = cached.score(batch)
    _close(got, nocache.score(batch))
    lens = {id(it): len(it.prefix_ids) for it in items}
    assert [r.cached_tokens for r in got] == [
        lens[id(items[2])],
        lens[id(items[0])],
        lens[id(items[1])],
    ]
    assert sum(r.computed_tokens for r in got) == (
        lens[id(items[3])] - lens[id(items[0])] + sum(len(it.tail_ids) for it in batch)
    )


def test_eviction_under_a_small_byte_bound_stays_exact(base: TorchBackend) -> None:
    probe = _sibling(base, 256 << 20)
    streams = [_stream(10 + s) for s in range(3)]
    probe.score([streams[0][-1]])
    per_token = probe.prefix_cache.bytes / len(streams[0][-1].prefix_ids)
    longest = max(len(s[-1].prefix_ids) for s in streams)
    bound = int(per_token * longest * 2.5)  # about two chain links fit
    small, nocache = _sibling(base, bound), _sibling(base, 0)
    root = ScoreItem(POLICY, (1, 2, 3), (Readout(-1, VERDICT, True),))
    for k in range(len(streams[0])):
        small.score([root])  # unary traffic on the policy prefix between the streams' checks
        for s in streams:  # interleaved streams
            _close(small.score([s[k]]), nocache.score([s[k]]))
            assert small.prefix_cache.bytes <= bound
    cache = small.prefix_cache
    assert cache.evictions > 0
    assert cache.extensions > 0  # some checks still extended their stream's previous prefix
    assert root.prefix_ids in cache  # the shared root survived the chains
    # a check whose chain was evicted is recomputed from the root: still exact
    again = streams[0][2]
    _close(small.score([again]), nocache.score([again]))


def test_onnx_backend_reuses_the_longest_prefix_too(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pytest.importorskip("onnxruntime")
    from guardwire_backends.onnxruntime_ort import OnnxBackend
    from tests.parity.conftest import exported_onnx_dir

    onnx_dir = exported_onnx_dir(tiny_model_dir, tmp_path_factory)
    cached = OnnxBackend.load(str(onnx_dir), device="cpu", threads=1)
    nocache = OnnxBackend.load(str(onnx_dir), device="cpu", threads=1, prefix_cache_bytes=0)
    items = _stream(3, steps=4)
    prev = 0
    for item in items:
        got = cached.score([item])
        _close(got, nocache.score([item]))
        assert got[0].cached_tokens == prev
        assert got[0].computed_tokens == len(item.prefix_ids) - prev + len(item.tail_ids)
        prev = len(item.prefix_ids)
    assert cached.prefix_cache.extensions == len(items) - 1
    cached.close()
    nocache.close()
