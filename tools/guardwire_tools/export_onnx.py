"""Export a guard model to an ONNX scoring graph: ``guardwire export-onnx``.

The graph is what :mod:`guardwire_backends.onnxruntime_ort` needs and nothing more (numbers in
shared/reference/cpu-measurements.md §3)::

    inputs   input_ids       int64 (batch, seq)            the tail tokens, right-padded
             attention_mask  int64 (batch, past + seq)     1 = real token (past and tail)
             position_ids    int64 (batch, seq)            past .. past + seq - 1
             readout_index   int64 (R,)                    flat rows ``b * seq + s`` to read out
             vocab_ids       int64 (K,)                    lm_head rows wanted at every readout
             lse_index       int64 (L,)                    readouts (into R) that need the
                                                           full-vocabulary log-sum-exp
             past_key_i / past_value_i  (1, kv_heads, past, head_dim), one per layer: the
                                        prefix KV, shared by every row (expanded in the graph)
    outputs  logits          float32 (R, K)
             logsumexp       float32 (L,)
             present_key_i / present_value_i  (batch, kv_heads, past + seq, head_dim)

A zero-length past makes the same graph do the prefill (its ``present_*`` is the prefix KV to
cache) and a plain forward. Full-vocabulary logits never leave the graph: the decoder's hidden
states are gathered at the readout rows first, the lm_head rows of ``vocab_ids`` give the
logits, and the whole vocabulary is multiplied only for the ``lse_index`` rows, where it is
reduced to one number in the graph. So the lm_head stays inside the graph (on the GPU with the
CUDA provider; no second host-side copy of a 128k x hidden matrix) and an output is a few
floats per readout. The exporter is ``torch.onnx.export(dynamo=True)``; optimum-onnx does not
support transformers 5.

Next to ``model.onnx`` (+ ``model.onnx.data``) the export writes ``guardwire-onnx.json`` (source
model, revision, family, token ids, opset, versions, shape, validation result) and copies the
tokenizer and config files, so the directory is a complete ``--model`` for
``--backend onnxruntime``. Before it reports success the export is validated: ONNX Runtime (the
real backend, prefix cache included) against a plain PyTorch forward on sample prompts.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import json
import logging
import math
import random
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

from guardwire_backends._optional import require
from guardwire_backends.base import Readout, ScoreItem, ScoreResult
from guardwire_backends.hf_compat import cache_kwargs, output_cache

__all__ = [
    "GRAPH_FILE",
    "METADATA_FILE",
    "TOLERANCE",
    "ExportError",
    "ExportReport",
    "export_onnx",
    "export_onnx_main",
]

log = logging.getLogger(__name__)

GRAPH_FILE = "model.onnx"
METADATA_FILE = "guardwire-onnx.json"
FORMAT_VERSION = 1
# files copied beside the graph when the source has them (tokenizer, template, config)
COPIED_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
)
DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16"}
# (atol, rtol): |ONNX - PyTorch fp32| <= atol + rtol * |PyTorch| on every validation logit and
# log-sum-exp. fp16 graphs are compared with the fp32 model, so they get fp16 rounding room.
TOLERANCE: dict[str, tuple[float, float]] = {"float32": (1e-3, 0.0), "float16": (5e-2, 1e-2)}
INPUT_NAMES = (
    "input_ids",
    "attention_mask",
    "position_ids",
    "readout_index",
    "vocab_ids",
    "lse_index",
)
OUTPUT_NAMES = ("logits", "logsumexp")


class ExportError(RuntimeError):
    """The export or its validation failed; the message says why."""


@dataclass(frozen=True)
class ExportReport:
    out_dir: Path
    graph: Path
    metadata: dict[str, Any]
    max_abs_diff: float
    seconds: float


def past_names(num_layers: int) -> list[str]:
    return [f"past_{kv}_{i}" for i in range(num_layers) for kv in ("key", "value")]


def present_names(num_layers: int) -> list[str]:
    return [f"present_{kv}_{i}" for i in range(num_layers) for kv in ("key", "value")]


# -- the graph --------------------------------------------------------------------------------


def _score_module(model: Any) -> Any:
    """Wrap a ``*ForCausalLM`` as the scoring graph described in the module docstring."""
    torch = require("torch", "torch")
    dynamic_cache = require("transformers", "torch").DynamicCache

    class ScoreGraph(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.decoder = model.get_decoder()
            head = model.get_output_embeddings()
            self.head = head
            self.softcap = getattr(model.config, "final_logit_softcapping", None)

        def _project(self, h: Any, weight: Any, bias: Any) -> Any:
            logits = (h @ weight.T).float()
            if bias is not None:
                logits = logits + bias.float()
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            return logits

        def forward(
            self,
            input_ids: Any,
            attention_mask: Any,
            position_ids: Any,
            readout_index: Any,
            vocab_ids: Any,
            lse_index: Any,
            *past: Any,
        ) -> tuple[Any, ...]:
            b, s = input_ids.shape
            cache = dynamic_cache(
                ddp_cache_data=[
                    (past[i].expand(b, -1, -1, -1), past[i + 1].expand(b, -1, -1, -1))
                    for i in range(0, len(past), 2)
                ]
            )
            out = self.decoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                **cache_kwargs(self.decoder, cache),
                use_cache=True,
            )
            hidden = out.last_hidden_state
            h = hidden.reshape(b * s, hidden.shape[-1]).index_select(0, readout_index)
            w, bias = self.head.weight, getattr(self.head, "bias", None)
            # the few wanted rows in fp32; the full vocabulary in the model dtype, reduced in fp32
            sub_bias = None if bias is None else bias.index_select(0, vocab_ids)
            logits = self._project(h.float(), w.index_select(0, vocab_ids).float(), sub_bias)
            lse = torch.logsumexp(self._project(h.index_select(0, lse_index), w, bias), dim=-1)
            presents = [t for layer in output_cache(out).layers for t in (layer.keys, layer.values)]
            return (logits, lse, *presents)

    return ScoreGraph().eval()


def _example_inputs(
    cfg: Any, torch: Any, dtype: Any, *, batch: int = 2, seq: int = 7, past: int = 5
) -> tuple[Any, ...]:
    """Trace inputs; every dynamic size >= 2 and distinct so that export does not specialise."""
    layers, kv, hd = _shape(cfg)
    ids = torch.randint(0, int(cfg.vocab_size), (batch, seq))
    mask = torch.ones(batch, past + seq, dtype=torch.long)
    mask[0, past + seq - 2 :] = 0
    pos = torch.arange(past, past + seq).expand(batch, seq).contiguous()
    readout = torch.tensor([3, seq + 4, 2 * seq - 1])
    vocab = torch.tensor([1, 5, 7, 11])
    lse = torch.tensor([0, 2])
    kvs = [torch.randn(1, kv, past, hd, dtype=dtype) for _ in range(2 * layers)]
    return (ids, mask, pos, readout, vocab, lse, *kvs)


def _shape(cfg: Any) -> tuple[int, int, int]:
    layers = int(cfg.num_hidden_layers)
    heads = int(cfg.num_attention_heads)
    kv = int(getattr(cfg, "num_key_value_heads", None) or heads)
    hd = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    return layers, kv, hd


def _export_graph(model: Any, path: Path, opset: int | None) -> int:
    torch = require("torch", "torch")
    cfg = model.config
    layers = _shape(cfg)[0]
    wrapper = _score_module(model)
    dtype = next(model.parameters()).dtype
    args = _example_inputs(cfg, torch, dtype)
    dyn = torch.export.Dim.DYNAMIC
    two = {0: dyn, 1: dyn}
    dynamic_shapes = (
        two,
        two,
        two,
        {0: dyn},
        {0: dyn},
        {0: dyn},
        tuple({2: dyn} for _ in args[6:]),
    )
    with warnings.catch_warnings(), torch.inference_mode(), _quiet_loggers():
        warnings.simplefilter("ignore")  # exporter noise (torchvision absent, deprecations)
        program = torch.onnx.export(
            wrapper,
            args,
            dynamo=True,
            input_names=[*INPUT_NAMES, *past_names(layers)],
            output_names=[*OUTPUT_NAMES, *present_names(layers)],
            opset_version=opset,
            dynamic_shapes=dynamic_shapes,
            optimize=True,
            verbose=False,
        )
        if program is None:  # pragma: no cover - dynamo=True always returns a program
            raise ExportError("torch.onnx.export returned no program")
        program.save(str(path), external_data=True)
    onnx = require("onnx", "onnx")
    proto = onnx.load(str(path), load_external_data=False)
    return int(next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")))


@contextlib.contextmanager
def _quiet_loggers() -> Iterator[None]:
    """The exporter logs every pass (onnx_ir at INFO, torchvision-absent warnings): mute it."""
    saved = {}
    for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch._dynamo"):
        logger = logging.getLogger(name)
        saved[name] = logger.level
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


# -- metadata ---------------------------------------------------------------------------------


def _version(package: str) -> str | None:
    try:
        return _metadata.version(package)
    except _metadata.PackageNotFoundError:
        return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _adapter(model_dir: Path) -> Any:
    """The guard adapter of the model dir, or None when it is not a known guard family."""
    try:
        from guardwire_server.adapters.registry import load_adapter

        return load_adapter(model_dir)
    except Exception as exc:
        log.warning("no guard adapter for %s (%s); validating on random tokens", model_dir, exc)
        return None


def _sample_items(adapter: Any, vocab: int, readout_ids: Sequence[int] | None) -> list[ScoreItem]:
    """Validation prompts: real guard prompts of mixed lengths when the adapter is known (two
    policies, so two prefixes), plus prefix-less items; random tokens otherwise."""
    rng = random.Random(1234)
    items: list[ScoreItem] = []
    if adapter is not None:
        from guardwire_server.domain import Conversation, Policy, Role, Turn

        texts = [
            "What is the capital of France?",
            "How do I bake bread?",
            "Write a short poem about the sea, with rhymes, four stanzas and a title. " * 3,
            "ok",
        ]
        conversations = [Conversation(turns=(Turn(Role.USER, t),)) for t in texts]
        conversations.append(
            Conversation(
                turns=(Turn(Role.USER, "hi there"), Turn(Role.ASSISTANT, "Hello! How can I help?"))
            )
        )
        default = adapter.default_policy
        narrow = Policy(categories=default.categories[:3])
        for policy in (default, narrow):
            for conv in conversations:
                items.append(adapter.encode(conv, policy).item)
    extra = tuple(readout_ids or ())
    for n in range(3):
        tail = tuple(rng.randrange(vocab) for _ in range(5 + 9 * n))
        wanted = extra or tuple(rng.randrange(vocab) for _ in range(4))
        readouts = (
            Readout(len(tail) // 2, wanted, with_logsumexp=True),
            Readout(-1, wanted),
        )
        prefix = (
            () if adapter is not None or n == 0 else tuple(rng.randrange(vocab) for _ in range(40))
        )
        items.append(ScoreItem(prefix, tail, readouts))
    if extra and adapter is not None:  # the caller's readout ids on real prompts too
        items = [
            ScoreItem(it.prefix_ids, it.tail_ids, (*it.readouts, Readout(-1, extra)))
            for it in items
        ]
    return items


def _reference(model: Any, items: Sequence[ScoreItem]) -> list[list[tuple[list[float], float]]]:
    """(readout logits, full log-sum-exp) per readout, from a plain full-sequence fp32 forward
    (no cache, no padding; the lm_head applied to the readout rows only, to save time)."""
    torch = require("torch", "torch")
    out = []
    with torch.inference_mode():
        for item in items:
            ids = torch.tensor([item.prefix_ids + item.tail_ids])
            hidden = model.get_decoder()(input_ids=ids).last_hidden_state[0]
            p0, t = len(item.prefix_ids), len(item.tail_ids)
            at = torch.tensor([p0 + (r.position % t) for r in item.readouts])
            logits = model.get_output_embeddings()(hidden[at]).float()  # the model's own head
            softcap = getattr(model.config, "final_logit_softcapping", None)
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            out.append(
                [
                    (row[list(r.token_ids)].tolist(), float(torch.logsumexp(row, -1)))
                    for r, row in zip(item.readouts, logits, strict=True)
                ]
            )
    return out


def _max_diff(
    ref: Sequence[Sequence[tuple[list[float], float]]],
    got: Sequence[ScoreResult],
    items: Sequence[ScoreItem],
    tolerance: tuple[float, float],
) -> tuple[float, float]:
    """(max |Δ|, max |Δ| / (atol + rtol·|reference|)): the export passes when the second <= 1."""
    atol, rtol = tolerance
    worst = ratio = 0.0
    for item, want, res in zip(items, ref, got, strict=True):
        for r, (logits, lse), g in zip(item.readouts, want, res.readouts, strict=True):
            pairs = list(zip(logits, g.logits, strict=True))
            if r.with_logsumexp:
                if g.logsumexp is None:
                    return float("inf"), float("inf")
                pairs.append((lse, g.logsumexp))
            for a, b in pairs:
                worst = max(worst, abs(a - b))
                bound = atol + rtol * abs(a)
                excess = abs(a - b) / bound if bound else (math.inf if a != b else 0.0)
                ratio = max(ratio, excess)
    return worst, ratio


def validate_export(
    out_dir: Path, model: Any, items: Sequence[ScoreItem], tolerance: tuple[float, float]
) -> float:
    """Score ``items`` with the exported graph (cold, cached, one by one) and return the largest
    |Δ| against ``model``; raise ExportError when one exceeds ``atol + rtol·|reference|``."""
    from guardwire_backends.onnxruntime_ort import OnnxBackend

    ref = _reference(model, items)
    backend = OnnxBackend.load(str(out_dir), device="cpu")
    try:
        cold = backend.score(items)  # prefill + suffix batches
        warm = backend.score(items)  # prefixes from the cache
        alone = [backend.score([it])[0] for it in items]
    finally:
        backend.close()
    diffs = {
        name: _max_diff(ref, res, items, tolerance)
        for name, res in (("batched", cold), ("cached", warm), ("alone", alone))
    }
    worst = max(d[0] for d in diffs.values())
    if not max(d[1] for d in diffs.values()) <= 1.0:
        atol, rtol = tolerance
        detail = ", ".join(f"{k} {v[0]:.3g}" for k, v in diffs.items())
        raise ExportError(
            f"validation failed: ONNX Runtime vs PyTorch max |Δ| = {worst:.3g}, above the "
            f"tolerance {atol:g} + {rtol:g}·|logit| ({detail}) on {len(items)} sample prompts; "
            f"the graph in {out_dir} is not usable"
        )
    return worst


# -- the export -------------------------------------------------------------------------------


def export_onnx(
    model_ref: str | Path,
    out_dir: str | Path,
    dtype: str = "fp32",
    opset: int | None = None,
    readout_ids: Sequence[int] | None = None,
    *,
    revision: str | None = None,
    validate: bool = True,
) -> ExportReport:
    """Export ``model_ref`` (a model dir or hub id) to ``out_dir`` and validate it.

    ``readout_ids``: extra token ids whose logits the validation compares and the metadata
    records (the guard's verdict and category ids are always included when the family is known;
    the graph itself takes any ids at run time). Raises ExportError on failure.
    """
    t0 = time.perf_counter()
    if dtype not in DTYPES:
        raise ExportError(f"unknown dtype {dtype!r}; expected fp32 or fp16")
    dtype_name = DTYPES[dtype]
    try:
        torch = require("torch", "torch")
        require("transformers", "torch")
        require("onnx", "onnx")
        require("onnxscript", "onnx")
        require("onnxruntime", "onnx")
    except ImportError as exc:
        raise ExportError(str(exc)) from exc
    from guardwire_server.loading import resolve_model_dir

    try:
        src = resolve_model_dir(str(model_ref), revision or "")
    except Exception as exc:
        raise ExportError(f"cannot find model {model_ref!r}: {exc}") from exc
    if not (src / "config.json").is_file():
        raise ExportError(f"{src} has no config.json: not a Hugging Face model directory")
    if not (src / "tokenizer.json").is_file():
        raise ExportError(f"{src} has no tokenizer.json; the ONNX directory needs the tokenizer")
    out = Path(out_dir)
    if out.resolve() == src.resolve():
        raise ExportError("--out must differ from the model directory")
    out.mkdir(parents=True, exist_ok=True)
    for stale in (GRAPH_FILE, GRAPH_FILE + ".data", METADATA_FILE):
        (out / stale).unlink(missing_ok=True)

    try:
        model = _load_model(src, torch.float32)
    except Exception as exc:
        raise ExportError(f"cannot load {src} with transformers: {exc}") from exc
    cfg = model.config
    layers, kv_heads, head_dim = _shape(cfg)
    # float16: a second load; the float32 model stays the validation reference
    graph_model = model if dtype_name == "float32" else _load_model(src, torch.float16)
    try:
        opset_used = _export_graph(graph_model, out / GRAPH_FILE, opset)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if graph_model is not model:
            del graph_model
    for name in COPIED_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)

    adapter = _adapter(out)
    token_ids: dict[str, Any] = {
        "bos": getattr(cfg, "bos_token_id", None),
        "eos": getattr(cfg, "eos_token_id", None),
        "pad": getattr(cfg, "pad_token_id", None),
        "readout_ids": list(readout_ids or ()),
    }
    vocab = int(model.get_output_embeddings().weight.shape[0])
    items = _sample_items(adapter, vocab, readout_ids)
    if adapter is not None:
        token_ids["verdict"] = dict(zip(("safe", "unsafe"), adapter.verdict_token_ids, strict=True))
        token_ids["category"] = list(items[0].readouts[1].token_ids)
    commit = getattr(cfg, "_commit_hash", None)
    meta: dict[str, Any] = {
        "format": "guardwire-onnx",
        "format_version": FORMAT_VERSION,
        "graph": GRAPH_FILE,
        "source_model": str(model_ref),
        "revision": str(commit) if commit else (revision or "local"),
        "architecture": (getattr(cfg, "architectures", None) or [type(model).__name__])[0],
        "family": getattr(adapter, "family", None),
        "template_hash": getattr(adapter, "template_hash", None),
        "tokenizer": {"file": "tokenizer.json", "sha256": _sha256(out / "tokenizer.json")},
        "token_ids": token_ids,
        "dtype": dtype_name,
        "opset": opset_used,
        "exporter": "torch.onnx.export(dynamo=True)",
        "versions": {
            p: _version(p)
            for p in (
                "torch",
                "transformers",
                "onnx",
                "onnxscript",
                "onnxruntime-gpu",
                "onnxruntime",
            )
            if _version(p)
        },
        "num_layers": layers,
        "num_kv_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_size": int(cfg.hidden_size),
        "vocab_size": vocab,
        "inputs": [*INPUT_NAMES, *past_names(layers)],
        "outputs": [*OUTPUT_NAMES, *present_names(layers)],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    _write_metadata(out, meta)
    worst = float("nan")
    if validate:
        tol = TOLERANCE[dtype_name]
        try:
            worst = validate_export(out, model, items, tol)
        except ExportError:
            (out / METADATA_FILE).unlink(missing_ok=True)  # an unvalidated graph does not load
            raise
        except Exception as exc:
            (out / METADATA_FILE).unlink(missing_ok=True)
            raise ExportError(
                f"validation could not run the graph: {type(exc).__name__}: {exc}"
            ) from exc
        meta["validation"] = {
            "max_abs_diff": worst,
            "atol": tol[0],
            "rtol": tol[1],
            "prompts": len(items),
            "reference": "PyTorch float32 full forward",
        }
        _write_metadata(out, meta)
    seconds = time.perf_counter() - t0
    log.info(
        "exported %s to %s (%s, opset %d) in %.1fs", model_ref, out, dtype_name, opset_used, seconds
    )
    return ExportReport(out, out / GRAPH_FILE, meta, worst, seconds)


def _load_model(src: Path, dtype: Any) -> Any:
    transformers = require("transformers", "torch")
    hf_logging = transformers.utils.logging
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return transformers.AutoModelForCausalLM.from_pretrained(
            src, dtype=dtype, attn_implementation="sdpa"
        ).eval()
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _write_metadata(out: Path, meta: dict[str, Any]) -> None:
    tmp = out / (METADATA_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(out / METADATA_FILE)


# -- CLI --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="guardwire export-onnx",
        description="Export a guard model to an ONNX scoring graph (with KV-cache inputs) for "
        "--backend onnxruntime, and validate it against PyTorch.",
    )
    p.add_argument("--model", required=True, help="model directory or Hugging Face hub id")
    p.add_argument("--out", required=True, help="output directory (graph, metadata, tokenizer)")
    p.add_argument(
        "--dtype",
        default="fp32",
        choices=("fp32", "fp16"),
        help="graph weights dtype (fp16 is for the CUDA provider)",
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: exporter's)")
    p.add_argument("--revision", default=None, help="hub revision of --model")
    p.add_argument(
        "--readout-id",
        type=int,
        action="append",
        dest="readout_ids",
        help="extra token id to validate (repeatable)",
    )
    return p


def export_onnx_main(argv: Sequence[str] | None = None) -> int:
    """``guardwire export-onnx``: 0 on a validated export, 1 on failure, 2 on bad usage."""
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = export_onnx(
            args.model,
            args.out,
            dtype=args.dtype,
            opset=args.opset,
            readout_ids=args.readout_ids,
            revision=args.revision,
        )
    except ExportError as exc:
        print(f"guardwire export-onnx: FAILED: {exc}", file=sys.stderr)
        return 1
    m = report.metadata
    print(
        f"exported {m['source_model']} -> {report.graph} ({m['dtype']}, opset {m['opset']}, "
        f"{m['num_layers']} layers); validated: max |Δ| vs PyTorch = {report.max_abs_diff:.2e} "
        f"(tolerance {m['validation']['atol']:g} + {m['validation']['rtol']:g}·|logit|) "
        f"in {report.seconds:.1f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(export_onnx_main())
