"""Family detection from a model directory's metadata, and adapter loading."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from guardwire_server.adapters.llama_guard import LlamaGuard3Adapter
from guardwire_server.adapters.registry import KNOWN_FAMILIES, detect_family, load_adapter


@pytest.fixture
def template(templates_dir: Path) -> Callable[[str], str]:
    return lambda name: (templates_dir / name).read_text(encoding="utf-8")


def _model_dir(tmp_path: Path, name: str = "model", **files: object) -> Path:
    d = tmp_path / name
    d.mkdir()
    for fname, content in files.items():
        fname = fname.replace("__", ".")
        text = content if isinstance(content, str) else json.dumps(content)
        (d / fname).write_text(text, encoding="utf-8")
    return d


def test_1b_from_tokenizer_config(tmp_path: Path, template: Callable[[str], str]) -> None:
    tpl = template("llama-guard-3-1b.chat_template.jinja")
    d = _model_dir(tmp_path, tokenizer_config__json={"chat_template": tpl})
    assert detect_family(d) == "llama-guard-3-1b"


def test_8b_from_chat_template_file(tmp_path: Path, template: Callable[[str], str]) -> None:
    tpl = template("llama-guard-3-8b.chat_template.jinja")
    d = _model_dir(
        tmp_path,
        chat_template__jinja=tpl,
        # shape of a Llama 3.2 1B must not override the template
        config__json={"num_hidden_layers": 16, "hidden_size": 2048},
    )
    assert detect_family(d) == "llama-guard-3-8b"


def test_8b_from_named_template_list(tmp_path: Path, template: Callable[[str], str]) -> None:
    tpl = template("llama-guard-3-8b.chat_template.jinja")
    cfg = {"chat_template": [{"name": "default", "template": tpl}]}
    assert detect_family(_model_dir(tmp_path, tokenizer_config__json=cfg)) == "llama-guard-3-8b"


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("llamaguard-7b.chat_template.jinja", "llama-guard-1"),
        ("meta-llama-guard-2-8b.chat_template.jinja", "llama-guard-2"),
        ("llama-guard-4-12b.tpu-inference-variant.jinja", "llama-guard-4"),
        ("granite-guardian-3.0-2b.chat_template.jinja", "granite-guardian-3"),
    ],
)
def test_other_families_from_their_templates(
    tmp_path: Path, name: str, family: str, template: Callable[[str], str]
) -> None:
    d = _model_dir(tmp_path, chat_template__json={"chat_template": template(name)})
    assert detect_family(d) == family


def test_later_granite_guardian_is_refused(tmp_path: Path, template: Callable[[str], str]) -> None:
    tpl = template("granite-guardian-3.0-2b.chat_template.jinja") + "{% if think %}{% endif %}"
    with pytest.raises(ValueError, match=r"3\.2 or later"):
        detect_family(_model_dir(tmp_path, chat_template__jinja=tpl))


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("meta-llama/LlamaGuard-7b", "llama-guard-1"),
        ("meta-llama/Meta-Llama-Guard-2-8B", "llama-guard-2"),
        ("meta-llama/Llama-Guard-4-12B", "llama-guard-4"),
        ("ibm-granite/granite-guardian-3.1-2b", "granite-guardian-3"),
    ],
)
def test_more_name_hints(tmp_path: Path, name: str, family: str) -> None:
    cfg = {"_name_or_path": name}
    assert detect_family(_model_dir(tmp_path, config__json=cfg)) == family


@pytest.mark.parametrize(
    ("token", "family"),
    [("<|header_start|>", "llama-guard-4"), ("<|start_of_role|>", "granite-guardian-3")],
)
def test_control_tokens_break_the_tie(tmp_path: Path, token: str, family: str) -> None:
    tok = {"added_tokens": [{"id": 0, "content": token, "special": True}]}
    assert detect_family(_model_dir(tmp_path, tokenizer__json=tok)) == family


def test_name_hints(tmp_path: Path) -> None:
    cfg = {"_name_or_path": "meta-llama/Llama-Guard-3-8B", "hidden_size": 64}
    assert detect_family(_model_dir(tmp_path, config__json=cfg)) == "llama-guard-3-8b"
    assert detect_family(_model_dir(tmp_path, "Llama-Guard-3-1B")) == "llama-guard-3-1b"


def test_undetectable_defaults_to_1b_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = _model_dir(tmp_path, config__json={"hidden_size": 64}, tokenizer_config__json="{bad json")
    with caplog.at_level(logging.WARNING, logger="guardwire_server.adapters.registry"):
        assert detect_family(d) == "llama-guard-3-1b"
    assert "could not detect" in caplog.text


def test_load_adapter(tmp_path: Path, llama3_dir: Path, template: Callable[[str], str]) -> None:
    tpl = template("llama-guard-3-8b.chat_template.jinja")
    d = _model_dir(tmp_path, chat_template__jinja=tpl)
    (d / "tokenizer.json").symlink_to(llama3_dir / "tokenizer.json")
    detected = load_adapter(d)  # family detected, tokenizer from the model directory
    assert isinstance(detected, LlamaGuard3Adapter)
    assert detected.family == "llama-guard-3-8b"
    assert detected.verdict_token_ids == (19193, 39257)
    empty = _model_dir(tmp_path, "other", chat_template__jinja=tpl)
    override = load_adapter(
        empty, "llama-guard-3-1b", tokenizer_dir=llama3_dir, category_threshold=0.5
    )
    assert isinstance(override, LlamaGuard3Adapter)
    assert override.family == "llama-guard-3-1b"  # an explicit family always wins
    assert override.category_threshold == 0.5


def test_unknown_family_lists_known(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as err:
        load_adapter(tmp_path, "shieldgemma-2b")
    for family in KNOWN_FAMILIES:
        assert family in str(err.value)
