"""ONNX Runtime backend: scores items with a graph written by ``guardwire export-onnx``.

Same behaviour as :mod:`guardwire_backends.torch_hf` (its :class:`PrefixCache` and token
accounting, the
item helpers of :mod:`guardwire_backends.fake`): the KV of each distinct prefix is computed once
(the graph
with a zero-length past, or on top of the longest cached token prefix: the graph's present KV
fed back as past, which is also how a stream's growing conversation costs only its new tokens)
and kept in a byte-bounded LRU keyed by the prefix tokens; each prefix group then runs its tails
as right-padded batches on top of that KV, which the graph broadcasts to the batch. The graph
returns only the readout logits and the asked-for log-sum-exps (see
:mod:`guardwire_tools.export_onnx`).

Execution providers are chosen once, at load. ``onnxruntime-gpu`` lists the CUDA provider even on
machines without CUDA libraries and then silently falls back to the CPU, so the device is read
from the session's *active* providers (shared/reference/cpu-measurements.md §1). With CUDA
active, inputs go through IO binding and the cached prefix KV stays on the GPU as ``OrtValue``s.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from guardwire_backends._optional import require
from guardwire_backends.base import (
    BackendError,
    BackendInfo,
    BackendStartError,
    BackendUnhealthy,
    Capabilities,
    InferenceError,
    ReadoutResult,
    ScoreItem,
    ScoreResult,
    WeightsNotFound,
)
from guardwire_backends.fake import group_by_prefix, resolve_positions
from guardwire_backends.torch_hf import PrefixCache, prefix_token_accounting

__all__ = ["GRAPH_OPTIMIZATION_LEVELS", "OnnxBackend"]

log = logging.getLogger(__name__)

MiB = 1 << 20
# The same names as guardwire_tools.export_onnx (not imported: the backends never import the
# tools, and this keeps the module's imports minimal).
GRAPH_FILE = "model.onnx"
METADATA_FILE = "guardwire-onnx.json"
GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "layout", "all")
_ORT_LEVEL = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "layout": "ORT_ENABLE_LAYOUT",
    "all": "ORT_ENABLE_ALL",
}
_NP_DTYPES = {"float32": "float32", "float16": "float16"}
_EXPORT_HINT = "create one with: guardwire export-onnx --model MODEL_DIR_OR_HUB_ID --out DIR"

KV = tuple[tuple[Any, Any], ...]  # numpy arrays (CPU) or OrtValues on the device (CUDA)


def _nbytes(x: Any) -> int:
    if hasattr(x, "nbytes"):
        return int(x.nbytes)
    n = 1
    for d in x.shape():  # OrtValue
        n *= int(d)
    return n * (2 if "float16" in x.data_type() else 4)


class OrtPrefixCache(PrefixCache):
    """:class:`guardwire_backends.torch_hf.PrefixCache` (longest-prefix reuse included) for numpy
    arrays
    / OrtValues."""

    def _size(self, kv: KV) -> int:
        return sum(_nbytes(k) + _nbytes(v) for k, v in kv)


def read_metadata(model_dir: str | Path) -> dict[str, Any]:
    """The export metadata of an ONNX model dir; WeightsNotFound when it is not one."""
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise WeightsNotFound(
            f"ONNX model directory {str(model_dir)!r} does not exist; " + _EXPORT_HINT
        )
    if not (path / GRAPH_FILE).is_file():
        raise WeightsNotFound(
            f"{str(model_dir)!r} has no {GRAPH_FILE}: the onnxruntime backend "
            f"needs an exported graph; {_EXPORT_HINT}"
        )
    meta_path = path / METADATA_FILE
    if not meta_path.is_file():
        raise WeightsNotFound(
            f"{str(model_dir)!r} has {GRAPH_FILE} but no {METADATA_FILE} (not written by "
            f"guardwire export-onnx, or its validation failed); {_EXPORT_HINT}"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackendStartError(f"cannot read {meta_path}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != "guardwire-onnx":
        raise BackendStartError(f"{meta_path} is not a guardwire-onnx metadata file")
    if int(meta.get("format_version", 0)) != 1:
        raise BackendStartError(
            f"{meta_path}: format_version {meta.get('format_version')} is not supported by this "
            "guardwire; re-export the model"
        )
    return meta


def _providers(device: str) -> tuple[list[Any], str]:
    """(providers to ask for, the CUDA device wanted or "" for CPU only)."""
    d = device.strip().lower()
    if d == "cpu":
        return ["CPUExecutionProvider"], ""
    if d == "auto":
        return [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"], "cuda:0"
    if d == "cuda" or d.startswith("cuda:"):
        index = int(d.split(":", 1)[1]) if ":" in d else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"], (
            f"cuda:{index}"
        )
    raise ValueError(f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


class OnnxBackend:
    """Scores items with an exported ONNX graph; construct with :meth:`load`."""

    def __init__(
        self,
        session: Any,
        *,
        meta: dict[str, Any],
        info: BackendInfo,
        prefix_cache_bytes: int,
        max_batch_size: int,
        max_batch_tokens: int,
        io_binding: bool = False,
    ) -> None:
        self._np = require("numpy", "onnx")
        self._ort = require("onnxruntime", "onnx")
        self._session = session
        self._meta = meta
        self._info = info
        self._layers = int(meta["num_layers"])
        self._kv_shape = (1, int(meta["num_kv_heads"]), 0, int(meta["head_dim"]))
        self._float = self._np.dtype(_NP_DTYPES[info.dtype])
        pad = meta.get("token_ids", {}).get("pad")
        self._pad_id = pad if isinstance(pad, int) and 0 <= pad < info.vocab_size else 0
        self._past_names = [
            f"past_{kv}_{i}" for i in range(self._layers) for kv in ("key", "value")
        ]
        self._present_names = [n.replace("past_", "present_", 1) for n in self._past_names]
        self._device = info.device
        self._device_id = int(info.device.split(":", 1)[1]) if ":" in info.device else 0
        self._io_binding = io_binding
        self._cache = OrtPrefixCache(prefix_cache_bytes)
        self._empty_kv = self._kv_value(self._np.zeros(self._kv_shape, dtype=self._float))
        self._caps = Capabilities(
            prefix_cache=prefix_cache_bytes > 0,
            is_padded=True,
            max_batch_size=max_batch_size,
            max_batch_tokens=max_batch_tokens,
        )

    @classmethod
    def load(
        cls,
        model_dir: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        threads: int | None = None,
        graph_optimization_level: str = "all",
        prefix_cache_bytes: int = 512 * MiB,
        max_batch_size: int = 16,
        max_batch_tokens: int = 8192,
        io_binding: bool | None = None,
        **ignored: Any,
    ) -> OnnxBackend:
        """Load an ``export-onnx`` directory. ``io_binding``: None = on exactly when CUDA is
        active (forcing it on the CPU exercises that code path in tests). Options of other
        backends (``revision``, ``trust_remote_code``...) are accepted and ignored."""
        if max_batch_size < 1 or max_batch_tokens < 1:
            raise ValueError("max_batch_size and max_batch_tokens must be >= 1")
        level = graph_optimization_level.strip().lower()
        if level not in _ORT_LEVEL:
            raise ValueError(
                f"unknown graph_optimization_level {graph_optimization_level!r}; expected one of "
                f"{', '.join(GRAPH_OPTIMIZATION_LEVELS)}"
            )
        meta = read_metadata(model_dir)
        graph_dtype = str(meta.get("dtype", "float32"))
        want = dtype.strip().lower()
        aliases = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
        if want != "auto" and aliases.get(want, want) != graph_dtype:
            raise BackendStartError(
                f"dtype {dtype!r} requested but the ONNX graph in {model_dir!r} was exported as "
                f"{graph_dtype}; use dtype 'auto' or re-export with guardwire export-onnx --dtype"
            )
        if graph_dtype not in _NP_DTYPES:
            raise BackendStartError(f"unsupported graph dtype {graph_dtype!r} in the metadata")
        try:
            ort = require("onnxruntime", "onnx")
        except ImportError as exc:
            raise BackendStartError(str(exc)) from exc
        providers, wanted_cuda = _providers(device)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # no CUDA-library noise when the provider falls back
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _ORT_LEVEL[level])
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        if threads:
            opts.intra_op_num_threads = int(threads)
        graph = os.path.join(os.path.expanduser(model_dir), GRAPH_FILE)
        try:
            session = ort.InferenceSession(graph, sess_options=opts, providers=providers)
        except Exception as exc:
            raise BackendStartError(f"ONNX Runtime cannot load {graph}: {exc}") from exc
        active = list(session.get_providers())
        cuda = "CUDAExecutionProvider" in active
        if wanted_cuda and not cuda and device.strip().lower() != "auto":
            raise BackendStartError(
                f"device {device!r} requested but the CUDA execution provider did not activate "
                f"(active: {active}); install onnxruntime-gpu with CUDA 12/13 + cuDNN 9, or use "
                "--device cpu"
            )
        dev = wanted_cuda if cuda else "cpu"
        use_binding = cuda if io_binding is None else bool(io_binding)
        log.info(
            "onnxruntime %s: providers=%s (requested device=%s), io_binding=%s, threads=%s, "
            "graph optimisation=%s, opset %s",
            ort.__version__,
            active,
            device,
            use_binding,
            threads or "default",
            level,
            meta.get("opset"),
        )
        info = BackendInfo(
            name="onnxruntime",
            model_ref=str(model_dir),
            revision=str(meta.get("revision") or "local"),
            device=dev,
            dtype=graph_dtype,
            vocab_size=int(meta["vocab_size"]),
        )
        return cls(
            session,
            meta=meta,
            info=info,
            prefix_cache_bytes=prefix_cache_bytes,
            max_batch_size=max_batch_size,
            max_batch_tokens=max_batch_tokens,
            io_binding=use_binding,
        )

    @property
    def info(self) -> BackendInfo:
        return self._info

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def prefix_cache(self) -> PrefixCache:
        return self._cache

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._meta)

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers()) if self._session is not None else []

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        """Score ``items``; one prefill per uncached prefix, one padded run per tail chunk."""
        if self._session is None:
            raise BackendUnhealthy("backend is closed")
        positions = resolve_positions(items, self._info.vocab_size)
        groups = group_by_prefix(items)
        readouts: list[list[ReadoutResult]] = [[] for _ in items]
        reused: dict[tuple[int, ...], int] = {}
        try:
            # shortest prefixes first: a longer one in the same batch can extend them; a miss
            # computes only the tokens past the longest cached prefix (PrefixCache.fetch)
            for prefix, idxs in sorted(groups.items(), key=lambda g: len(g[0])):
                kv = None
                if prefix:
                    kv, reused[prefix] = self._cache.fetch(prefix, self._prefill)
                for chunk in self._chunks(items, idxs):
                    self._run_chunk(items, positions, chunk, len(prefix), kv, readouts)
        except BackendError:
            raise
        except Exception as exc:
            raise InferenceError(f"ONNX Runtime run failed: {type(exc).__name__}: {exc}") from exc
        tokens = prefix_token_accounting(items, groups, reused)
        return [
            ScoreResult(tuple(r), computed, hit)
            for r, (computed, hit) in zip(readouts, tokens, strict=True)
        ]

    def warmup(self, items: Sequence[ScoreItem]) -> None:
        self.score(items)

    def close(self) -> None:
        self._cache.clear()
        self._session = None
        self._empty_kv = None

    # -- internals -----------------------------------------------------------------------------

    def _kv_value(self, array: Any) -> Any:
        """A past-KV tensor as the session takes it: numpy, or an OrtValue on the device."""
        if not self._io_binding:
            return array
        where = "cuda" if self._device.startswith("cuda") else "cpu"
        return self._ort.OrtValue.ortvalue_from_numpy(array, where, self._device_id)

    def _feeds(
        self,
        ids: Any,
        mask: Any,
        pos: Any,
        readout: Sequence[int],
        vocab: Sequence[int],
        lse: Sequence[int],
    ) -> dict[str, Any]:
        np = self._np
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": pos,
            "readout_index": np.asarray(readout, dtype=np.int64),
            "vocab_ids": np.asarray(vocab, dtype=np.int64),
            "lse_index": np.asarray(lse, dtype=np.int64),
        }

    def _run(self, feeds: dict[str, Any], kv: KV | None, want_present: bool) -> list[Any]:
        """Run the graph; returns [logits, logsumexp] (+ the presents when asked)."""
        past: list[Any] = []
        for i in range(self._layers):
            k, v = kv[i] if kv is not None else (self._empty_kv, self._empty_kv)
            past += [k, v]
        names = ["logits", "logsumexp", *(self._present_names if want_present else ())]
        if not self._io_binding:
            feeds.update(zip(self._past_names, past, strict=True))
            return list(self._session.run(names, feeds))
        binding = self._session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        for name, value in zip(self._past_names, past, strict=True):
            binding.bind_ortvalue_input(name, value)
        where = "cuda" if self._device.startswith("cuda") else "cpu"
        binding.bind_output("logits", "cpu")
        binding.bind_output("logsumexp", "cpu")
        for name in self._present_names:  # stays on the device (the prefix KV to cache)
            binding.bind_output(name, where, self._device_id)
        self._session.run_with_iobinding(binding)
        out = binding.get_outputs()
        head = [out[0].numpy(), out[1].numpy()]
        return head + (list(out[2:]) if want_present else [])

    def _prefill(self, ids: Sequence[int], past: KV | None = None, past_len: int = 0) -> KV:
        """KV (batch 1) of ``ids`` on top of ``past`` (``past_len`` tokens; None: from scratch)."""
        np = self._np
        n = past_len + len(ids)
        feeds = self._feeds(
            np.asarray([ids], dtype=np.int64),
            np.ones((1, n), dtype=np.int64),
            np.arange(past_len, n, dtype=np.int64)[None],
            (),
            (),
            (),
        )
        presents = self._run(feeds, past, want_present=True)[2:]
        return tuple((presents[2 * i], presents[2 * i + 1]) for i in range(self._layers))

    def _chunks(self, items: Sequence[ScoreItem], idxs: list[int]) -> list[list[int]]:
        """Padded batches within the limits, longest tails first (as the torch backend)."""
        order = sorted(idxs, key=lambda i: -len(items[i].tail_ids))
        chunks: list[list[int]] = []
        cur: list[int] = []
        for i in order:
            longest = len(items[cur[0]].tail_ids) if cur else len(items[i].tail_ids)
            too_many = len(cur) >= self._caps.max_batch_size
            if cur and (too_many or (len(cur) + 1) * longest > self._caps.max_batch_tokens):
                chunks.append(cur)
                cur = []
            cur.append(i)
        if cur:
            chunks.append(cur)
        return chunks

    def _run_chunk(
        self,
        items: Sequence[ScoreItem],
        positions: list[tuple[int, ...]],
        chunk: list[int],
        prefix_len: int,
        kv: KV | None,
        out: list[list[ReadoutResult]],
    ) -> None:
        np = self._np
        lengths = [len(items[i].tail_ids) for i in chunk]
        b, s = len(chunk), max(lengths)
        ids = np.full((b, s), self._pad_id, dtype=np.int64)
        mask = np.zeros((b, prefix_len + s), dtype=np.int64)
        mask[:, :prefix_len] = 1
        for row, (i, n) in enumerate(zip(chunk, lengths, strict=True)):
            ids[row, :n] = items[i].tail_ids
            mask[row, prefix_len : prefix_len + n] = 1
        pos = np.broadcast_to(np.arange(prefix_len, prefix_len + s, dtype=np.int64), (b, s))
        flat, wanted = [], []
        for row, i in enumerate(chunk):
            for p, r in zip(positions[i], items[i].readouts, strict=True):
                flat.append(row * s + p)
                wanted.append(r)
        if not wanted:
            return
        vocab_ids = sorted({t for r in wanted for t in r.token_ids})
        column = {t: c for c, t in enumerate(vocab_ids)}
        lse_rows = [n for n, r in enumerate(wanted) if r.with_logsumexp]
        feeds = self._feeds(ids, mask, np.ascontiguousarray(pos), flat, vocab_ids, lse_rows)
        logits, lse = self._run(feeds, kv, want_present=False)[:2]
        sub_list = logits.tolist()
        # (ORT returns an empty (0, V) rather than (0,) when no row needs the log-sum-exp)
        lse_list = dict(zip(lse_rows, lse.reshape(len(lse_rows)).tolist(), strict=True))
        n = 0
        for i in chunk:
            for r in items[i].readouts:
                values = tuple(sub_list[n][column[t]] for t in r.token_ids)
                out[i].append(ReadoutResult(logits=values, logsumexp=lse_list.get(n)))
                n += 1
