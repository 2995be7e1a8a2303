"""The in-process configurations the server is compared with, on the same model and requests.

1. ``moderate``: the model card's ``moderate()`` loop -- the chat-template text (our adapter's
   rendering, byte-identical to the official template) tokenized and ``model.generate`` per
   request, greedy, exactly 3 new tokens (``\\n\\n``, ``safe``, ``<|eot_id|>``: random weights
   never emit EOS, so ``min_new_tokens=3``).
2. ``batched_no_prefix``: a batched forward of the full prompts (policy prefix + conversation +
   suffix, the server's exact token ids), right-padded batches in arrival order cut by the
   server's batch size and padded-token budget, logits only at the last real position.
3. (the server, driven over gRPC by ``guardwire_tools.bench.driver``)
4. ``floor``: the compute floor -- a bare batched forward of only the non-prefix tokens on top of
   the policy prefix's KV (computed once, untimed), batches sorted by length (least padding) and
   cut by the same budgets, hidden states read only at the readout positions and multiplied by
   the few lm_head rows needed. No gRPC, no batcher, no tokenizer, no log-sum-exp.

Runs in a worker process (``python -m guardwire_tools.bench.worker baselines``) so the driver stays
light and
each model's memory is measured on its own.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from guardwire_tools.bench.rss import RssSampler, rss_mb

__all__ = ["chunk", "run_baselines"]

CONFIGS = ("moderate", "batched_no_prefix", "floor")


def chunk(
    lengths: Sequence[int], order: Sequence[int], max_size: int, max_tokens: int
) -> list[list[int]]:
    """Greedy batches of ``order`` within ``max_size`` items and ``max(len) * n <= max_tokens``
    padded tokens (an item over the budget runs alone)."""
    out: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i in order:
        n = lengths[i]
        grown = max(longest, n)
        if cur and (len(cur) >= max_size or grown * (len(cur) + 1) > max_tokens):
            out.append(cur)
            cur, grown = [], n
        cur.append(i)
        longest = grown
    if cur:
        out.append(cur)
    return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_batches(
    run: Callable[[list[int]], None],
    batches: list[list[int]],
    lengths: list[int],
    *,
    warmup: list[int],
    device: str,
) -> dict[str, Any]:
    """Runs ``warmup`` untimed, then every batch timed; the figures of a batched baseline."""
    run(warmup)
    start = time.perf_counter()
    for batch in batches:
        run(batch)
    _sync(device)
    return {
        "total_s": time.perf_counter() - start,
        "batches": len(batches),
        "padded_tokens": sum(max(lengths[i] for i in b) * len(b) for b in batches),
        "real_tokens": sum(lengths),
    }


def run_baselines(
    model_dir: Path,
    conversations: list[list[tuple[str, str]]],
    *,
    device: str,
    dtype: str,
    threads: int,
    max_batch_size: int,
    max_batch_tokens: int,
    configs: Sequence[str] = CONFIGS,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from guardwire_backends.devices import resolve_device_and_dtype
    from guardwire_backends.fake import resolve_positions
    from guardwire_backends.hf_compat import cache_kwargs, output_cache
    from guardwire_server.adapters.registry import load_adapter
    from guardwire_server.domain import Conversation, Role, Turn

    if threads:
        torch.set_num_threads(threads)
    dev, dt = resolve_device_and_dtype(device, dtype)
    out: dict[str, Any] = {"device": dev, "dtype": str(dt).removeprefix("torch."), "configs": {}}
    with RssSampler() as rss:
        t0 = time.perf_counter()
        auto: Any = AutoModelForCausalLM
        model = auto.from_pretrained(str(model_dir), dtype=dt, attn_implementation="sdpa")
        model.to(dev).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        out["load_s"] = time.perf_counter() - t0
        out["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
        out["rss_after_load_mb"] = rss_mb()
        adapter = load_adapter(model_dir)
        policy = adapter.default_policy
        convs = [Conversation(tuple(Turn(Role(r), t) for r, t in c)) for c in conversations]
        prompts = [adapter.encode(c, policy) for c in convs]
        items = [p.item for p in prompts]
        texts = [adapter.render(c, policy).full for c in convs]
        positions = resolve_positions(items, model.config.vocab_size)
        out["tokens"] = {
            "prefix": sorted({len(i.prefix_ids) for i in items}),
            "tail_mean": sum(len(i.tail_ids) for i in items) / len(items),
            "tail_max": max(len(i.tail_ids) for i in items),
            "total_mean": sum(i.num_tokens for i in items) / len(items),
        }
        decoder = model.get_decoder()
        head = model.get_output_embeddings().weight
        pad = 0

        def timed(name: str, fn: Callable[[], dict[str, Any]]) -> None:
            gc.collect()
            rss.reset()
            if dev.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            log(f"  baseline {name}: {len(items)} requests ...")
            with torch.inference_mode():
                res = fn()
            res["peak_rss_mb"] = rss.peak()
            if dev.startswith("cuda"):
                res["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
            res["rps"] = len(items) / res["total_s"]
            out["configs"][name] = res
            log(f"  baseline {name}: {res['rps']:.3f} req/s")

        # -- 1. the moderate() loop --------------------------------------------------------------
        def moderate() -> dict[str, Any]:
            def one(text: str) -> tuple[int, str]:
                enc = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(dev)
                gen = model.generate(
                    **enc,
                    max_new_tokens=3,
                    min_new_tokens=3,
                    do_sample=False,
                    pad_token_id=pad,
                )
                answer = tokenizer.decode(gen[0][enc["input_ids"].shape[-1] :])
                return int(enc["input_ids"].shape[-1]), answer

            one(texts[0])  # warm-up, untimed
            service, mismatched = [], 0
            start = time.perf_counter()
            for text, item, pos in zip(texts, items, positions, strict=True):
                t = time.perf_counter()
                n, _ = one(text)
                service.append(time.perf_counter() - t)
                # the server's tail continues after the text with the forced one-token lead;
                # its verdict readout sits on that lead
                mismatched += n != len(item.prefix_ids) + pos[0]
            return {
                "total_s": time.perf_counter() - start,
                "service_s": service,
                "token_mismatch": mismatched,
            }

        # -- 2. batched full-prompt forward, no prefix cache ----------------------------------
        def batched_no_prefix() -> dict[str, Any]:
            seqs = [(*i.prefix_ids, *i.tail_ids) for i in items]
            lengths = [len(s) for s in seqs]
            batches = chunk(lengths, range(len(seqs)), max_batch_size, max_batch_tokens)

            def run(batch: list[int]) -> None:
                b, s = len(batch), max(lengths[i] for i in batch)
                ids = torch.full((b, s), pad, dtype=torch.long)
                mask = torch.zeros((b, s), dtype=torch.long)
                for row, i in enumerate(batch):
                    ids[row, : lengths[i]] = torch.tensor(seqs[i])
                    mask[row, : lengths[i]] = 1
                hidden = decoder(input_ids=ids.to(dev), attention_mask=mask.to(dev))
                last = torch.tensor([lengths[i] - 1 for i in batch], device=dev)
                h = hidden.last_hidden_state[torch.arange(b, device=dev), last]
                (h @ head.T).float().cpu()  # full-vocabulary logits, last position only

            return time_batches(run, batches, lengths, warmup=batches[0][:1], device=dev)

        # -- 4. the compute floor: tails only, on a cached prefix -------------------------------
        def floor() -> dict[str, Any]:
            from transformers import DynamicCache

            kv: dict[tuple[int, ...], Any] = {}
            for item in items:  # untimed: the prefix KV is computed once per policy x role
                if item.prefix_ids not in kv:
                    ids = torch.tensor([item.prefix_ids], device=dev)
                    o = decoder(input_ids=ids, use_cache=True)
                    kv[item.prefix_ids] = [(x.keys, x.values) for x in output_cache(o).layers]
            lengths = [len(i.tail_ids) for i in items]
            groups: dict[tuple[int, ...], list[int]] = {}
            for n, item in enumerate(items):
                groups.setdefault(item.prefix_ids, []).append(n)
            batches = [
                b
                for idxs in groups.values()
                for b in chunk(
                    lengths,
                    sorted(idxs, key=lambda i: -lengths[i]),
                    max_batch_size,
                    max_batch_tokens,
                )
            ]

            def run(batch: list[int]) -> None:
                prefix = items[batch[0]].prefix_ids
                p = len(prefix)
                b, s = len(batch), max(lengths[i] for i in batch)
                ids = torch.full((b, s), pad, dtype=torch.long)
                mask = torch.zeros((b, p + s), dtype=torch.long)
                mask[:, :p] = 1
                for row, i in enumerate(batch):
                    ids[row, : lengths[i]] = torch.tensor(items[i].tail_ids)
                    mask[row, p : p + lengths[i]] = 1
                cache = DynamicCache(
                    ddp_cache_data=[
                        (k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in kv[prefix]
                    ]
                )
                pos = torch.arange(p, p + s).expand(b, s)
                hidden = decoder(
                    input_ids=ids.to(dev),
                    attention_mask=mask.to(dev),
                    position_ids=pos.to(dev),
                    **cache_kwargs(decoder, cache),
                    use_cache=True,
                ).last_hidden_state
                rows = [row for row, i in enumerate(batch) for _ in positions[i]]
                cols = [c for i in batch for c in positions[i]]
                wanted = sorted({t for i in batch for r in items[i].readouts for t in r.token_ids})
                h = hidden[torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)]
                w = head.index_select(0, torch.tensor(wanted, device=dev))
                (h.float() @ w.float().T).cpu()

            return time_batches(run, batches, lengths, warmup=batches[-1][:1], device=dev)

        steps = {"moderate": moderate, "batched_no_prefix": batched_no_prefix, "floor": floor}
        for name in configs:
            timed(name, steps[name])
    out["peak_rss_mb"] = rss_mb(field="VmHWM")
    return out
