"""Benchmark (not a test): checking a streamed response every N tokens, with and without the
conversation's KV kept between checks.

One conversation: a user prompt, then an assistant response of ``--response-tokens`` tokens
checked every ``--every`` tokens (32 checks for 512 / 16), on a random-weight model of a named
shape, in one process, side by side:

* **streaming**: what ``StreamClassify`` does, ``encode(..., cache_body=True)``: the
  conversation so far is the cacheable prefix, so each check computes only the new text, a few
  margin tokens and the assessment suffix on top of the cached KV (longest-prefix reuse);
* **re-classify**: each check is a unary ``Classify`` of the whole conversation so far
  (``cache_body=False``; only the policy prefix is cached);
* **final only**: one unary check of the complete response, for reference.

It drives the adapter and the torch backend directly, exactly as ``Guard`` does per check
(encode, then ``backend.score`` of the item), without gRPC or the micro-batcher: the numbers
are compute time (encode + forward). Each method gets a fresh prefix cache holding only the
policy prefix (warmed, untimed); repeats are interleaved and the median is reported. The
streaming and re-classify verdicts are compared (fp32: equal within 1e-4).

    python bench/stream_checks.py                      # the small proxy shape (seconds)
    python bench/stream_checks.py --shape lg3-1b       # the Llama Guard 3 1B shape (minutes)

Shapes (as in ``bench/shapes.py``): ``small``, a quick proxy (hidden 256, 4 layers, 4 heads,
2 KV heads, intermediate 1024, vocabulary 128256; written by
``guardwire_tools.tiny_model.make_test_model``), and ``lg3-1b`` (hidden 2048, 16 layers, 32
heads, 8 KV heads, intermediate 8192, untied lm_head; built in memory, random init: no 6 GB
directory). Both use the real Llama 3 tokenizer (``../shared/reference/tokenizers/llama3``).

On ``small`` the fixed per-check costs weigh: the full-vocabulary log-sum-exp of the verdict
readout reads the whole 128k x 256 lm_head (as large as the four layers together eight times
over), in every method alike, so the time ratio stays well under the token ratio; on
``lg3-1b`` the forward dominates and the time ratio follows the computed tokens.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guardwire_backends.base import BackendInfo, ScoreResult
from guardwire_backends.torch_hf import TorchBackend
from guardwire_server.adapters.common import softmax
from guardwire_server.adapters.llama_guard import LlamaGuard3Adapter
from guardwire_server.adapters.tokenization import Tokenizer
from guardwire_server.domain import Conversation, Role, Turn

# the Llama 3 tokenizer of ../shared, beside a checkout (python bench/stream_checks.py from its
# root)
TOKENIZER = (Path.cwd().parent / "shared" / "reference" / "tokenizers" / "llama3").resolve()

SHAPES: dict[str, dict[str, int]] = {
    "small": {"hidden": 256, "layers": 4, "heads": 4, "kv_heads": 2, "intermediate": 1024},
    "lg3-1b": {"hidden": 2048, "layers": 16, "heads": 32, "kv_heads": 8, "intermediate": 8192},
}
VOCAB = 128256
WORDS = (
    "the a of and to in is was it for on with as his they at be this from have or by one had "
    "not but what all were when we there can an your which their said if do will each about how "
    "up out them then she many some so these would other into has more her two like him see "
    "time could no make than first been its who now people my made over did down only way find "
    "use may water long little very after words called just where most know bread dough oven "
    "flour salt yeast knead rest shape bake crust loaf morning baker street town neighbour"
).split()


def build_model(shape: str, workdir: Path, dtype: str) -> tuple[Any, BackendInfo]:
    import torch

    s = SHAPES[shape]
    if shape == "small":
        from guardwire_tools.tiny_model import make_test_model

        path = make_test_model(
            workdir / "small",
            tokenizer_dir=TOKENIZER,
            hidden_size=s["hidden"],
            layers=s["layers"],
            heads=s["heads"],
            kv_heads=s["kv_heads"],
            intermediate=s["intermediate"],
        )
        backend = TorchBackend.load(str(path), device="cpu", dtype=dtype)
        return backend._model, backend.info
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=s["hidden"],
        intermediate_size=s["intermediate"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv_heads"],
        max_position_embeddings=131072,
        rope_theta=500000.0,
        tie_word_embeddings=False,  # LG3-1B ships a separate lm_head (llamaguard-facts.md)
        bos_token_id=128000,
        eos_token_id=128009,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    model = LlamaForCausalLM(config).to(torch_dtype).eval()
    info = BackendInfo("torch", f"random:{shape}", "random", "cpu", dtype, VOCAB)
    return model, info


def response_texts(tok: Tokenizer, n_tokens: int, every: int, seed: int) -> list[str]:
    """The response as generated: its text after every ``every`` tokens (the last one is the
    complete response of ``n_tokens`` tokens)."""
    rng = random.Random(seed)
    words: list[str] = []
    for i in range(n_tokens * 2):
        w = rng.choice(WORDS)
        words.append(w.capitalize() if i % 12 == 0 else w)
        if i % 12 == 11:
            words[-1] += rng.choice([".", ",", ".", "!", "?"])
    ids = tok.encode_text(" ".join(words))[:n_tokens]
    return [tok.decode(ids[:k]) for k in range(every, n_tokens + 1, every)]


@dataclass
class Run:
    seconds: float
    computed: int
    results: list[ScoreResult]


def run_checks(
    backend: TorchBackend,
    adapter: LlamaGuard3Adapter,
    conversations: list[Conversation],
    cache_body: bool,
) -> Run:
    policy = adapter.default_policy
    computed, results = 0, []
    start = time.perf_counter()
    for conv in conversations:
        item = adapter.encode(conv, policy, cache_body=cache_body).item
        result = backend.score([item])[0]
        computed += result.computed_tokens
        results.append(result)
    return Run(time.perf_counter() - start, computed, results)


def bench_one(
    model: Any,
    info: BackendInfo,
    tok: Tokenizer,
    adapter: LlamaGuard3Adapter,
    args: argparse.Namespace,
    prompt_tokens: int,
) -> str:
    """One markdown table: the three methods for a user turn of ``prompt_tokens`` tokens."""
    policy = adapter.default_policy
    prompt_ids = tok.encode_text(" ".join(random.Random(1).choice(WORDS) for _ in range(2000)))
    prompt = tok.decode(prompt_ids[:prompt_tokens]).strip().capitalize() + "?"
    texts = response_texts(tok, args.response_tokens, args.every, seed=2)
    checks = [Conversation((Turn(Role.USER, prompt), Turn(Role.ASSISTANT, t))) for t in texts]
    final = checks[-1:]
    warm = Conversation((Turn(Role.USER, prompt), Turn(Role.ASSISTANT, "ok")))

    def fresh() -> TorchBackend:
        b = TorchBackend(
            model,
            info=info,
            device="cpu",
            prefix_cache_bytes=args.prefix_cache_mb << 20,
            max_batch_size=16,
            max_batch_tokens=16384,
        )
        b.score([adapter.encode(warm, policy).item])  # caches the policy prefix (untimed)
        return b

    methods: dict[str, Callable[[], Run]] = {
        "streaming": lambda: run_checks(fresh(), adapter, checks, cache_body=True),
        "re-classify": lambda: run_checks(fresh(), adapter, checks, cache_body=False),
        "final only": lambda: run_checks(fresh(), adapter, final, cache_body=False),
    }
    fresh().score([adapter.encode(final[0], policy).item])  # warm up kernels / allocator
    runs: dict[str, list[Run]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, method in methods.items():
            runs[name].append(method())

    stream, whole = runs["streaming"][0].results, runs["re-classify"][0].results
    max_delta = max(
        abs(x - y)
        for a, b in zip(stream, whole, strict=True)
        for ra, rb in zip(a.readouts, b.readouts, strict=True)
        for x, y in zip(ra.logits, rb.logits, strict=True)
    )
    p_delta = max(
        abs(softmax(a.readouts[0].logits)[1] - softmax(b.readouts[0].logits)[1])
        for a, b in zip(stream, whole, strict=True)
    )
    seconds = {name: statistics.median(r.seconds for r in rs) for name, rs in runs.items()}
    final_tokens = adapter.encode(final[0], policy).item.num_tokens
    lines = [
        f"User turn {len(tok.encode_text(prompt))} tokens, {len(checks)} checks of a "
        f"{args.response_tokens}-token response every {args.every} tokens (final prompt "
        f"{final_tokens} tokens); median of {args.repeats} interleaved repeat(s).",
        "",
        "| method | checks | computed tokens | compute time (s) | per check (ms) | vs streaming |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "streaming": "streaming (`cache_body`: conversation KV reused)",
        "re-classify": "re-classify whole conversation (policy prefix cached)",
        "final only": "single final check (reference)",
    }
    for name, rs in runs.items():
        n = len(rs[0].results)
        t = seconds[name]
        lines.append(
            f"| {labels[name]} | {n} | {rs[0].computed} | {t:.3f} | {1000 * t / n:.1f} | "
            f"{t / seconds['streaming']:.2f}x |"
        )
    ratio = seconds["re-classify"] / seconds["streaming"]
    token_ratio = runs["re-classify"][0].computed / runs["streaming"][0].computed
    lines += [
        "",
        f"re-classify / streaming: **{ratio:.2f}x** compute time ({token_ratio:.2f}x computed "
        f"tokens); streaming / single final check: "
        f"{seconds['streaming'] / seconds['final only']:.2f}x. Streaming vs re-classify: max "
        f"|delta logit| {max_delta:.1e}, max |delta P(unsafe)| {p_delta:.1e}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--response-tokens", type=int, default=512)
    parser.add_argument("--every", type=int, default=16)
    parser.add_argument(
        "--prompt-tokens",
        default="24,256",
        help="user-turn lengths in tokens, comma-separated: one table each (default 24,256)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: stable when shared)"
    )
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--prefix-cache-mb", type=int, default=512)
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if not (TOKENIZER / "tokenizer.json").is_file():
        print(f"the Llama 3 tokenizer is not at {TOKENIZER}", file=sys.stderr)
        return 2
    tok = Tokenizer.from_dir(TOKENIZER)
    adapter = LlamaGuard3Adapter(tok, "1b")
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmp:
        t0 = time.perf_counter()
        model, info = build_model(args.shape, Path(tmp), args.dtype)
        build_s = time.perf_counter() - t0
    s = SHAPES[args.shape]
    print(
        f"\n**{args.shape}** (hidden {s['hidden']}, {s['layers']} layers, {s['heads']} heads, "
        f"{s['kv_heads']} KV heads, intermediate {s['intermediate']}, vocab {VOCAB}), random "
        f"weights, {info.dtype}, CPU, {torch.get_num_threads()} thread(s); model built in "
        f"{build_s:.1f}s; adapter + TorchBackend driven directly (no gRPC, no batcher).",
        flush=True,
    )
    for n in (int(x) for x in args.prompt_tokens.split(",") if x.strip()):
        print("\n" + bench_one(model, info, tok, adapter, args, n), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
