"""PyTorch + Hugging Face transformers backend.

Why it is shaped this way (numbers in shared/reference/cpu-measurements.md §2):

* Guard prompts are ~90 % fixed policy text, so the KV of each distinct prefix is computed once
  and kept in a byte-bounded LRU; a batch then runs only the tails, right-padded, on top of that
  KV expanded to the batch (exact: same logits as a full forward).
* Only a handful of logits are needed per item, so the decoder's hidden states are gathered at
  the readout positions and multiplied by the lm_head rows of the wanted token ids; the full
  vocabulary is touched only for readouts that ask for the log-sum-exp. Full-sequence logits
  are never computed. Readout logits are computed in float32 whatever the model dtype.
"""

from __future__ import annotations

import gc
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from backends._optional import require
from backends.base import (
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
from backends.devices import dtype_name, resolve_device_and_dtype
from backends.fake import group_by_prefix, resolve_positions, token_accounting

if TYPE_CHECKING:
    import torch

# torch and transformers are imported inside the methods: this module must import without them
# (the onnxruntime backend reuses PrefixCache), and a missing one must become a clear error.

__all__ = ["PrefixCache", "TorchBackend"]

log = logging.getLogger(__name__)

MiB = 1 << 20
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_LSE_CHUNK_ROWS = 16384  # vocab rows upcast to fp32 at a time for the log-sum-exp

KV = tuple[tuple["torch.Tensor", "torch.Tensor"], ...]


class PrefixCache:
    """LRU of per-prefix KV tensors (batch 1), bounded by bytes. Key: the prefix token tuple."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._entries: OrderedDict[tuple[int, ...], tuple[KV, int]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[int, ...]) -> KV | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def put(self, key: tuple[int, ...], kv: KV) -> bool:
        """Store ``kv``; evict least-recently-used entries to fit. False if it cannot fit."""
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        if size > self.max_bytes:
            return False
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        while self._entries and self.bytes + size > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted
            self.evictions += 1
        self._entries[key] = (kv, size)
        self.bytes += size
        return True

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


class TorchBackend:
    """Scores items with a causal LM; construct with :meth:`load`."""

    def __init__(
        self,
        model: Any,
        *,
        info: BackendInfo,
        device: str,
        prefix_cache_bytes: int,
        max_batch_size: int,
        max_batch_tokens: int,
    ) -> None:
        self._model = model
        self._decoder = model.get_decoder()
        head = model.get_output_embeddings()
        self._head_w = head.weight
        self._head_b = getattr(head, "bias", None)
        self._softcap = getattr(model.config, "final_logit_softcapping", None)
        pad = getattr(model.config, "pad_token_id", None)
        self._pad_id = pad if isinstance(pad, int) and 0 <= pad < info.vocab_size else 0
        self._device = device
        self._info = info
        self._cache = PrefixCache(prefix_cache_bytes)
        self._caps = Capabilities(
            prefix_cache=prefix_cache_bytes > 0,
            is_padded=True,
            max_batch_size=max_batch_size,
            max_batch_tokens=max_batch_tokens,
        )

    @classmethod
    def load(
        cls,
        model_ref: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        revision: str | None = None,
        threads: int | None = None,
        prefix_cache_bytes: int = 512 * MiB,
        max_batch_size: int = 16,
        max_batch_tokens: int = 8192,
        trust_remote_code: bool = False,
    ) -> TorchBackend:
        """Load ``model_ref`` (a local directory or a Hugging Face hub id) onto ``device``."""
        if max_batch_size < 1 or max_batch_tokens < 1:
            raise ValueError("max_batch_size and max_batch_tokens must be >= 1")
        try:
            require("torch", "torch")
            require("transformers", "torch")
        except ImportError as exc:
            raise BackendStartError(str(exc)) from exc
        import torch
        from transformers import AutoModelForCausalLM

        if threads:
            torch.set_num_threads(threads)
        dev, dt = resolve_device_and_dtype(device, dtype)
        source = _check_model_ref(model_ref)
        try:
            auto: Any = AutoModelForCausalLM  # its from_pretrained is loosely typed
            model: Any = auto.from_pretrained(
                source,
                revision=revision,
                dtype=dt,
                attn_implementation="sdpa",
                trust_remote_code=trust_remote_code,
            )
        except OSError as exc:
            raise WeightsNotFound(f"cannot load weights for {model_ref!r}: {exc}") from exc
        except Exception as exc:
            raise BackendStartError(f"cannot load model {model_ref!r}: {exc}") from exc
        try:
            model.to(dev)
            model.eval()
            vocab = int(model.get_output_embeddings().weight.shape[0])
        except Exception as exc:
            raise BackendStartError(f"cannot place model {model_ref!r} on {dev}: {exc}") from exc
        commit = getattr(model.config, "_commit_hash", None)
        info = BackendInfo(
            name="torch",
            model_ref=model_ref,
            revision=str(commit) if commit else "local",
            device=dev,
            dtype=dtype_name(dt),
            vocab_size=vocab,
        )
        log.info("loaded %s (revision %s) on %s/%s", model_ref, info.revision, dev, info.dtype)
        return cls(
            model,
            info=info,
            device=dev,
            prefix_cache_bytes=prefix_cache_bytes,
            max_batch_size=max_batch_size,
            max_batch_tokens=max_batch_tokens,
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

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        """Score ``items``; one prefill per uncached prefix, one padded forward per tail chunk.

        Token accounting follows :func:`backends.fake.token_accounting`: the first item of a
        group whose prefix was not cached is charged the prefix, every other item counts it as
        cached, so ``computed + cached == num_tokens`` and ``sum(computed)`` is the real work.
        """
        import torch

        if self._model is None:
            raise BackendUnhealthy("backend is closed")
        positions = resolve_positions(items, self._info.vocab_size)
        groups = group_by_prefix(items)
        readouts: list[list[ReadoutResult]] = [[] for _ in items]
        cached: set[tuple[int, ...]] = set()
        try:
            with torch.inference_mode():
                for prefix, idxs in groups.items():
                    kv = None
                    if prefix:
                        kv = self._cache.get(prefix) if self._cache.max_bytes else None
                        if kv is None:
                            kv = self._prefill(prefix)
                            self._cache.put(prefix, kv)
                        else:
                            cached.add(prefix)
                    for chunk in self._chunks(items, idxs):
                        self._run_chunk(items, positions, chunk, len(prefix), kv, readouts)
        except BackendError:
            raise
        except Exception as exc:
            raise InferenceError(f"forward pass failed: {type(exc).__name__}: {exc}") from exc
        tokens = token_accounting(items, groups, cached)
        return [
            ScoreResult(tuple(r), computed, hit)
            for r, (computed, hit) in zip(readouts, tokens, strict=True)
        ]

    def warmup(self, items: Sequence[ScoreItem]) -> None:
        self.score(items)

    def close(self) -> None:
        """Drop the model and the cache so their memory can be reclaimed."""
        import torch

        self._cache.clear()
        self._model = self._decoder = self._head_w = self._head_b = None
        gc.collect()
        if self._device.startswith("cuda"):
            torch.cuda.empty_cache()

    # -- internals -----------------------------------------------------------------------------

    def _prefill(self, prefix: tuple[int, ...]) -> KV:
        import torch

        ids = torch.tensor([prefix], dtype=torch.long, device=self._device)
        out = self._decoder(input_ids=ids, use_cache=True)
        return tuple((layer.keys, layer.values) for layer in out.past_key_values.layers)

    def _chunks(self, items: Sequence[ScoreItem], idxs: list[int]) -> list[list[int]]:
        """Split a group into padded batches within max_batch_size / max_batch_tokens.

        Longest tails first, so items of similar length share a batch and padding stays small.
        The token budget counts padded tail tokens (the prefix KV is reused, not recomputed).
        """
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
        import torch
        from transformers import DynamicCache

        lengths = [len(items[i].tail_ids) for i in chunk]
        b, s = len(chunk), max(lengths)
        ids = torch.full((b, s), self._pad_id, dtype=torch.long)
        mask = torch.zeros((b, prefix_len + s), dtype=torch.long)
        mask[:, :prefix_len] = 1
        for row, (i, n) in enumerate(zip(chunk, lengths, strict=True)):
            ids[row, :n] = torch.tensor(items[i].tail_ids, dtype=torch.long)
            mask[row, prefix_len : prefix_len + n] = 1
        pos = torch.arange(prefix_len, prefix_len + s, dtype=torch.long).expand(b, s)
        cache = None
        if kv is not None:
            # a fresh cache per forward: the forward appends to it, the stored KV stays intact
            cache = DynamicCache(
                ddp_cache_data=[(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in kv]
            )
        dev = self._device
        hidden = self._decoder(
            input_ids=ids.to(dev),
            attention_mask=mask.to(dev),
            position_ids=pos.to(dev),
            past_key_values=cache,
            use_cache=cache is not None,
        ).last_hidden_state

        rows, cols, wanted = [], [], []
        for row, i in enumerate(chunk):
            for p, r in zip(positions[i], items[i].readouts, strict=True):
                rows.append(row)
                cols.append(p)
                wanted.append(r)
        if not wanted:
            return
        h = hidden[torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)].float()
        vocab_ids = sorted({t for r in wanted for t in r.token_ids})
        column = {t: c for c, t in enumerate(vocab_ids)}
        sub = self._logits(h, torch.tensor(vocab_ids, dtype=torch.long, device=dev))
        lse_rows = [n for n, r in enumerate(wanted) if r.with_logsumexp]
        lse = self._logsumexp(h[lse_rows]) if lse_rows else None
        sub_list = sub.cpu().tolist()
        lse_list = dict(zip(lse_rows, lse.cpu().tolist(), strict=True)) if lse is not None else {}
        n = 0
        for i in chunk:
            for r in items[i].readouts:
                logits = tuple(sub_list[n][column[t]] for t in r.token_ids)
                out[i].append(ReadoutResult(logits=logits, logsumexp=lse_list.get(n)))
                n += 1

    def _logits(self, h: torch.Tensor, vocab_ids: torch.Tensor) -> torch.Tensor:
        """fp32 logits of the lm_head rows ``vocab_ids``."""
        bias = None if self._head_b is None else self._head_b.index_select(0, vocab_ids)
        return self._project(h, self._head_w.index_select(0, vocab_ids), bias)

    def _logsumexp(self, h: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary log-sum-exp in fp32; a low-precision lm_head is upcast in slices."""
        import torch

        vocab = self._head_w.shape[0]
        step = vocab if self._head_w.dtype == torch.float32 else _LSE_CHUNK_ROWS
        parts = []
        for start in range(0, vocab, step):
            end = min(start + step, vocab)
            bias = None if self._head_b is None else self._head_b[start:end]
            parts.append(torch.logsumexp(self._project(h, self._head_w[start:end], bias), dim=-1))
        return parts[0] if len(parts) == 1 else torch.logsumexp(torch.stack(parts, -1), dim=-1)

    def _project(
        self, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        import torch

        logits: torch.Tensor = h @ weight.float().T
        if bias is not None:
            logits = logits + bias.float()
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits


def _check_model_ref(model_ref: str) -> str:
    """What to pass to ``from_pretrained``; fails fast on a local path that does not exist."""
    path = os.path.expanduser(model_ref)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise WeightsNotFound(f"model directory {model_ref!r} has no config.json")
        return path
    if os.path.exists(path):
        raise WeightsNotFound(f"model reference {model_ref!r} is a file, expected a directory")
    if not _HUB_ID.match(model_ref):
        raise WeightsNotFound(
            f"model directory {model_ref!r} does not exist (and it is not a hub id like 'org/name')"
        )
    return model_ref
