"""``guardwire export-onnx``: the graph's interface, the metadata, the copied files, validation."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import guardwire_tools.export_onnx as export_mod  # noqa: E402
from guardwire_tools.export_onnx import (  # noqa: E402
    ExportError,
    _sample_items,
    export_onnx,
    export_onnx_main,
    validate_export,
)
from tests.parity.conftest import exported_onnx_dir, one_torch_thread  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def onnx_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported_onnx_dir(tiny_model_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def meta(onnx_dir: Path) -> dict[str, Any]:
    return json.loads((onnx_dir / "guardwire-onnx.json").read_text())


def test_metadata_records_source_versions_shape_and_validation(meta, tiny_model_dir) -> None:
    assert meta["format"] == "guardwire-onnx" and meta["format_version"] == 1
    assert meta["source_model"] == str(tiny_model_dir) and meta["revision"] == "local"
    assert meta["family"] == "llama-guard-3-1b" and len(meta["template_hash"]) == 64
    assert meta["dtype"] == "float32" and meta["opset"] >= 18
    assert meta["exporter"].startswith("torch.onnx.export")
    assert {"torch", "transformers", "onnx", "onnxscript"} <= set(meta["versions"])
    assert (meta["num_layers"], meta["num_kv_heads"], meta["head_dim"]) == (2, 2, 16)
    assert meta["vocab_size"] == 128256
    ids = meta["token_ids"]
    assert set(ids["verdict"]) == {"safe", "unsafe"} and len(ids["category"]) >= 13
    assert ids["bos"] == 128000
    assert meta["validation"]["max_abs_diff"] <= 1e-3 == meta["validation"]["atol"]
    assert len(meta["tokenizer"]["sha256"]) == 64


def test_directory_is_a_complete_model_dir(onnx_dir: Path, tiny_model_dir: Path) -> None:
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (onnx_dir / name).read_bytes() == (tiny_model_dir / name).read_bytes()
    assert (onnx_dir / "model.onnx").is_file() and (onnx_dir / "model.onnx.data").is_file()
    assert not list(onnx_dir.glob("*.safetensors"))
    from guardwire_server.adapters.registry import load_adapter

    assert load_adapter(onnx_dir).family == "llama-guard-3-1b"


def test_graph_interface_is_readout_sized(onnx_dir: Path, meta) -> None:
    onnx = pytest.importorskip("onnx")
    g = onnx.load(str(onnx_dir / "model.onnx"), load_external_data=False).graph
    inputs = [i.name for i in g.input]
    outputs = [o.name for o in g.output]
    assert inputs == meta["inputs"] and outputs == meta["outputs"]
    assert inputs[:6] == [
        "input_ids",
        "attention_mask",
        "position_ids",
        "readout_index",
        "vocab_ids",
        "lse_index",
    ]
    assert outputs[:2] == ["logits", "logsumexp"]

    def dims(v: Any) -> list[Any]:
        return [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]

    out = {o.name: dims(o) for o in g.output}
    assert len(out["logits"]) == 2 and len(out["logsumexp"]) == 1  # never (batch, seq, vocab)
    past = {i.name: dims(i) for i in g.input}["past_key_0"]
    assert past[0] == 1 and past[1] == 2 and past[3] == 16  # shared prefix KV, batch 1


def test_zero_length_past_and_empty_readouts_run(onnx_dir: Path) -> None:
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    empty = np.zeros((1, 2, 0, 16), dtype=np.float32)
    feeds = {
        "input_ids": np.array([[5, 6, 7]], dtype=np.int64),
        "attention_mask": np.ones((1, 3), dtype=np.int64),
        "position_ids": np.arange(3, dtype=np.int64)[None],
        "readout_index": np.zeros(0, dtype=np.int64),
        "vocab_ids": np.zeros(0, dtype=np.int64),
        "lse_index": np.zeros(0, dtype=np.int64),
        **{f"past_{kv}_{i}": empty for i in range(2) for kv in ("key", "value")},
    }
    logits, lse, *presents = sess.run(None, feeds)
    assert logits.shape == (0, 0) and lse.size == 0  # ORT reduces an empty (0, V) to (0, V)
    assert [p.shape for p in presents] == [(1, 2, 3, 16)] * 4


def test_validation_fails_loudly_above_tolerance(onnx_dir: Path, tiny_model_dir: Path) -> None:
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    from guardwire_server.adapters.registry import load_adapter

    items = _sample_items(load_adapter(onnx_dir), 128256, None)
    assert validate_export(onnx_dir, model, items, (1e-3, 0.0)) <= 1e-3
    with torch.no_grad():
        model.lm_head.weight[:, 10] += 0.5  # a different model: the graph no longer matches
    with pytest.raises(ExportError, match="validation failed"):
        validate_export(onnx_dir, model, items, (1e-3, 0.0))


def test_cli_success_and_failure(
    onnx_dir: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    # the exporter itself is exercised by the session fixture; here a copy of its graph stands in
    def fake_export(model: Any, path: Path, opset: int | None) -> int:
        shutil.copyfile(onnx_dir / "model.onnx", path)
        shutil.copyfile(onnx_dir / "model.onnx.data", path.parent / "model.onnx.data")
        return 20

    monkeypatch.setattr(export_mod, "_export_graph", fake_export)
    out = tmp_path / "ok"
    assert export_onnx_main(["--model", str(tiny_model_dir), "--out", str(out)]) == 0
    assert "validated: max |Δ| vs PyTorch" in capsys.readouterr().out
    assert (out / "guardwire-onnx.json").is_file()

    monkeypatch.setitem(export_mod.TOLERANCE, "float32", (0.0, 0.0))
    bad = tmp_path / "bad"
    assert export_onnx_main(["--model", str(tiny_model_dir), "--out", str(bad)]) == 1
    assert "FAILED: validation failed" in capsys.readouterr().err
    assert not (bad / "guardwire-onnx.json").exists()  # an unvalidated graph does not load

    assert export_onnx_main(["--model", str(tmp_path / "missing"), "--out", str(bad)]) == 1
    assert "FAILED" in capsys.readouterr().err
    assert export_onnx_main(["--model", str(tiny_model_dir)]) == 2  # --out is required
    assert export_onnx_main(["--help"]) == 0


def test_bad_arguments(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="unknown dtype"):
        export_onnx(tiny_model_dir, tmp_path / "x", dtype="int8")
    with pytest.raises(ExportError, match="must differ"):
        export_onnx(tiny_model_dir, tiny_model_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExportError, match=r"config\.json"):
        export_onnx(empty, tmp_path / "y")
