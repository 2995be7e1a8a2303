"""OnnxBackend (CPU provider) against a plain PyTorch forward of the tiny rigged model."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from guardwire_backends.base import (  # noqa: E402
    Backend,
    BackendStartError,
    BackendUnhealthy,
    InferenceError,
    Readout,
    ScoreItem,
    ScoreResult,
    WeightsNotFound,
)
from guardwire_backends.onnxruntime_ort import OnnxBackend  # noqa: E402
from guardwire_backends.registry import load_backend  # noqa: E402
from guardwire_tools.export_onnx import _reference  # noqa: E402
from tests.parity.conftest import exported_onnx_dir, one_torch_thread  # noqa: E402

TOL = 1e-3
REPO = Path(__file__).resolve().parents[3]
VOCAB = 128000


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def onnx_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported_onnx_dir(tiny_model_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> Any:
    return transformers.AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, dtype=torch.float32
    ).eval()


@pytest.fixture(scope="module")
def backend(onnx_dir: Path) -> Iterator[OnnxBackend]:
    b = OnnxBackend.load(str(onnx_dir), device="cpu", threads=1)
    yield b
    b.close()


def _items(seed: int = 0, n: int = 12, prefix: tuple[int, ...] | None = None) -> list[ScoreItem]:
    rng = random.Random(seed)
    prefix = tuple(rng.randrange(VOCAB) for _ in range(120)) if prefix is None else prefix
    out = []
    for _ in range(n):
        tail = tuple(rng.randrange(VOCAB) for _ in range(rng.randint(3, 50)))
        readouts = (
            Readout(len(tail) // 2, (19193, 39257), with_logsumexp=True),
            Readout(-1, tuple(rng.randrange(128256) for _ in range(5))),
        )
        out.append(ScoreItem(prefix, tail, readouts))
    return out


def _assert_matches(model: Any, items: Sequence[ScoreItem], res: Sequence[ScoreResult]) -> None:
    for item, got, want in zip(items, res, _reference(model, items), strict=True):
        for readout, g, (logits, lse) in zip(item.readouts, got.readouts, want, strict=True):
            assert g.logits == pytest.approx(logits, abs=TOL)
            if readout.with_logsumexp:
                assert g.logsumexp == pytest.approx(lse, abs=TOL)
            else:
                assert g.logsumexp is None


def _same(a: Sequence[ScoreResult], b: Sequence[ScoreResult], tol: float = 1e-5) -> None:
    for ra, rb in zip(a, b, strict=True):
        for xa, xb in zip(ra.readouts, rb.readouts, strict=True):
            assert xa.logits == pytest.approx(xb.logits, abs=tol)
            assert (xa.logsumexp is None) == (xb.logsumexp is None)
            if xa.logsumexp is not None:
                assert xa.logsumexp == pytest.approx(xb.logsumexp, abs=tol)


def test_protocol_info_and_capabilities(backend: OnnxBackend, onnx_dir: Path) -> None:
    assert isinstance(backend, Backend)
    info = backend.info
    assert info.name == "onnxruntime"
    assert (info.device, info.dtype, info.revision) == ("cpu", "float32", "local")
    assert info.model_ref == str(onnx_dir) and info.vocab_size == 128256
    assert backend.providers == ["CPUExecutionProvider"]
    caps = backend.capabilities
    assert caps.prefix_cache and caps.is_padded
    assert (caps.max_batch_size, caps.max_batch_tokens) == (16, 8192)
    assert backend.metadata["format"] == "guardwire-onnx"


def test_matches_plain_forward_batched_alone_and_cached(backend: OnnxBackend, reference) -> None:
    items = _items(1)
    cold = backend.score(items)
    _assert_matches(reference, items, cold)
    warm = backend.score(items)  # prefix KV from the cache
    _same(cold, warm)
    assert [r.cached_tokens for r in warm] == [120] * len(items)
    alone = [backend.score([it])[0] for it in items]
    _same(cold, alone)


def test_mixed_prefixes_and_no_prefix(backend: OnnxBackend, reference) -> None:
    rng = random.Random(7)
    items = _items(2, 4) + _items(3, 4, prefix=()) + _items(4, 4, prefix=(rng.randrange(VOCAB),))
    rng.shuffle(items)
    res = backend.score(items)
    _assert_matches(reference, items, res)
    for item, r in zip(items, res, strict=True):
        assert r.computed_tokens + r.cached_tokens == item.num_tokens


def test_token_accounting_like_the_torch_backend(onnx_dir: Path) -> None:
    b = OnnxBackend.load(str(onnx_dir), device="cpu", threads=1)
    items = _items(5, 3)
    first = b.score(items)
    assert [(r.computed_tokens, r.cached_tokens) for r in first] == [
        (120 + len(items[0].tail_ids), 0),
        (len(items[1].tail_ids), 120),
        (len(items[2].tail_ids), 120),
    ]
    second = b.score(items[:1])
    assert (second[0].computed_tokens, second[0].cached_tokens) == (len(items[0].tail_ids), 120)
    assert b.prefix_cache.hits == 1 and b.prefix_cache.misses == 1
    b.close()


def test_chunking_no_cache_and_small_cache(onnx_dir: Path, backend: OnnxBackend) -> None:
    items = _items(6, 10)
    want = backend.score(items)
    small = OnnxBackend.load(
        str(onnx_dir),
        device="cpu",
        threads=1,
        prefix_cache_bytes=0,
        max_batch_size=3,
        max_batch_tokens=90,
    )
    assert not small.capabilities.prefix_cache
    _same(want, small.score(items))
    assert all(r.cached_tokens == 0 for r in small.score(items[:1]))
    # room for one prefix KV only: alternating prefixes evict each other
    one = want[0]
    kv_bytes = 2 * 2 * 2 * 120 * 16 * 4  # layers x (k, v) x kv_heads x tokens x head_dim x fp32
    tight = OnnxBackend.load(str(onnx_dir), device="cpu", threads=1, prefix_cache_bytes=kv_bytes)
    other = _items(8, 1)
    for _ in range(2):
        _same([one], tight.score(items[:1]))
        tight.score(other)
    assert tight.prefix_cache.evictions >= 3 and len(tight.prefix_cache) == 1
    assert tight.prefix_cache.bytes == kv_bytes


def test_io_binding_and_optimisation_levels_agree(onnx_dir: Path, backend: OnnxBackend) -> None:
    items = _items(9, 6)
    want = backend.score(items)
    bound = OnnxBackend.load(str(onnx_dir), device="cpu", threads=1, io_binding=True)
    _same(want, bound.score(items))
    _same(want, bound.score(items))  # cached KV as OrtValues
    plain = OnnxBackend.load(
        str(onnx_dir), device="cpu", graph_optimization_level="disable", threads=1
    )
    _same(want, plain.score(items), tol=1e-4)
    with pytest.raises(ValueError, match="graph_optimization_level"):
        OnnxBackend.load(str(onnx_dir), graph_optimization_level="max")


def test_longer_prefix_extends_the_cached_one(backend: OnnxBackend, reference) -> None:
    rng = random.Random(11)
    key = tuple(rng.randrange(VOCAB) for _ in range(60))
    backend.score(_items(12, 1, prefix=key))
    for _ in range(3):  # a stream: the prefix grows chunk by chunk, each chunk computed once
        chunk = tuple(rng.randrange(VOCAB) for _ in range(rng.randint(1, 9)))
        items = _items(13, 3, prefix=key + chunk)
        res = backend.score(items)
        assert res[0].cached_tokens == len(key)  # present -> past: only the chunk was computed
        assert res[0].computed_tokens == len(chunk) + len(items[0].tail_ids)
        _assert_matches(reference, items, res)
        key += chunk


def test_readouts_without_lse_and_item_errors(backend: OnnxBackend) -> None:
    item = ScoreItem((1, 2, 3), (4, 5, 6), (Readout(0, (7,)), Readout(-1, (8, 9))))
    res = backend.score([item])[0]
    assert [r.logsumexp for r in res.readouts] == [None, None]
    assert [len(r.logits) for r in res.readouts] == [1, 2]
    assert backend.score([ScoreItem((1,), (2,), ())])[0].readouts == ()
    with pytest.raises(ValueError, match="empty tail"):
        backend.score([ScoreItem((1,), (), ())])
    with pytest.raises(ValueError, match="outside vocabulary"):
        backend.score([ScoreItem((1,), (2,), (Readout(0, (128256,)),))])
    with pytest.raises(ValueError, match="outside tail"):
        backend.score([ScoreItem((1,), (2,), (Readout(3, (1,)),))])


def test_run_failure_is_an_inference_error(onnx_dir: Path, monkeypatch) -> None:
    b = OnnxBackend.load(str(onnx_dir), device="cpu", threads=1)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(b._session, "run", boom)
    with pytest.raises(InferenceError, match="kernel exploded"):
        b.score(_items(13, 2))
    b.close()
    with pytest.raises(BackendUnhealthy):
        b.score(_items(13, 1))


def test_missing_graph_hints_at_export(tmp_path: Path, onnx_dir: Path) -> None:
    with pytest.raises(WeightsNotFound, match="guardwire export-onnx"):
        OnnxBackend.load(str(tmp_path / "nope"))
    with pytest.raises(WeightsNotFound, match="guardwire export-onnx"):
        OnnxBackend.load(str(tmp_path))  # a dir without model.onnx (e.g. a torch model dir)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "model.onnx").write_bytes(b"")
    with pytest.raises(WeightsNotFound, match=r"guardwire-onnx\.json"):
        OnnxBackend.load(str(partial))
    (partial / "guardwire-onnx.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(BackendStartError, match="not a guardwire-onnx"):
        OnnxBackend.load(str(partial))


def test_corrupt_graph_is_a_start_error(tmp_path: Path, onnx_dir: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copyfile(onnx_dir / "guardwire-onnx.json", bad / "guardwire-onnx.json")
    (bad / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(BackendStartError, match="cannot load"):
        OnnxBackend.load(str(bad), device="cpu", threads=1)


def test_dtype_and_device_checks(onnx_dir: Path) -> None:
    assert OnnxBackend.load(str(onnx_dir), dtype="float32", device="auto").info.dtype == "float32"
    with pytest.raises(BackendStartError, match="exported as float32"):
        OnnxBackend.load(str(onnx_dir), dtype="bfloat16")
    with pytest.raises(ValueError, match="unknown device"):
        OnnxBackend.load(str(onnx_dir), device="tpu")
    b = OnnxBackend.load(str(onnx_dir), device="auto")
    if "CUDAExecutionProvider" not in b.providers:  # this machine has no usable CUDA
        assert b.info.device == "cpu"
        with pytest.raises(BackendStartError, match="CUDA execution provider did not activate"):
            OnnxBackend.load(str(onnx_dir), device="cuda")


def test_registry_loads_it_and_ignores_torch_options(onnx_dir: Path) -> None:
    b = load_backend(
        "onnxruntime",
        str(onnx_dir),
        device="cpu",
        dtype="auto",
        revision=None,
        threads=1,
        prefix_cache_bytes=1 << 20,
        max_batch_size=4,
        max_batch_tokens=512,
    )
    assert isinstance(b, OnnxBackend) and b.capabilities.max_batch_size == 4
    b.close()


def test_module_imports_neither_torch_nor_onnxruntime() -> None:
    code = (
        "import sys, guardwire_backends.onnxruntime_ort, guardwire_tools.export_onnx; "
        "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
