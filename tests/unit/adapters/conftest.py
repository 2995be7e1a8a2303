"""Fixtures reading the reference data in ``../shared`` (never copied into the repo)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED = (REPO_ROOT / ".." / "shared").resolve()
REFERENCE = SHARED / "reference"
LLAMA3_DIR = REFERENCE / "tokenizers" / "llama3"
TEMPLATES = REFERENCE / "chat-templates"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference data not found at {path} (the ../shared checkout is absent)")
    return path


@pytest.fixture(scope="session")
def llama3_dir() -> Path:
    return _need(LLAMA3_DIR / "tokenizer.json").parent


@pytest.fixture(scope="session")
def llama3_tokenizer(llama3_dir: Path) -> Any:
    from guardwire_server.adapters.tokenization import Tokenizer

    return Tokenizer.from_dir(llama3_dir)


@pytest.fixture(scope="session")
def raw_llama3(llama3_dir: Path) -> Any:
    """The plain ``tokenizers`` object, default settings: what HF-style whole-string encoding
    (``tokenizer(full, add_special_tokens=False)``) does."""
    import tokenizers

    return tokenizers.Tokenizer.from_file(str(llama3_dir / "tokenizer.json"))


@pytest.fixture(scope="session")
def templates_dir() -> Path:
    return _need(TEMPLATES)


def _template_text(name: str) -> str:
    return _need(TEMPLATES / name).read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def template_texts() -> dict[str, str]:
    return {
        "1b": _template_text("llama-guard-3-1b.chat_template.jinja"),
        "8b": _template_text("llama-guard-3-8b.chat_template.jinja"),
    }


def make_env(*, hf_whitespace: bool) -> Any:
    """A Jinja environment like transformers' chat-template renderer (which uses
    ``trim_blocks=True, lstrip_blocks=True``); ``hf_whitespace=False`` gives Jinja's defaults."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=hf_whitespace,
        lstrip_blocks=hf_whitespace,
        extensions=[jinja2.ext.loopcontrols],
    )
    env.globals["raise_exception"] = raise_exception
    return env


JinjaRender = Callable[..., str]


@pytest.fixture(scope="session")
def jinja_render(template_texts: dict[str, str]) -> Callable[[bool], dict[str, JinjaRender]]:
    """``jinja_render(hf_whitespace)[variant](messages, **kwargs) -> str``."""
    cache: dict[bool, dict[str, JinjaRender]] = {}

    def get(hf_whitespace: bool = True) -> dict[str, JinjaRender]:
        if hf_whitespace not in cache:
            env = make_env(hf_whitespace=hf_whitespace)
            cache[hf_whitespace] = {
                v: env.from_string(text).render for v, text in template_texts.items()
            }
        return cache[hf_whitespace]

    return get


# -- other families: reference templates and converted tokenizers (tests/reference_tokenizers) --


def reference_template(name: str) -> str:
    return _template_text(name)


@pytest.fixture(scope="session")
def llama2_tokenizer_dir(request: pytest.FixtureRequest) -> Path:
    """Llama 2's SentencePiece model converted to ``tokenizer.json`` (pytest cache or tmp)."""
    pytest.importorskip("sentencepiece")
    from tests.reference_tokenizers import cached_dir, llama2_dir

    _need(REFERENCE / "tokenizers" / "llama2" / "tokenizer.model")
    return llama2_dir(cached_dir(request, "guardwire-llama2-tokenizer"))


@pytest.fixture(scope="session")
def llama4_tokenizer_dir(request: pytest.FixtureRequest) -> Path:
    """Llama 4's tiktoken ranks converted to ``tokenizer.json`` (pytest cache or tmp)."""
    from tests.reference_tokenizers import cached_dir, llama4_dir

    _need(REFERENCE / "tokenizers" / "llama4" / "tokenizer.model")
    return llama4_dir(cached_dir(request, "guardwire-llama4-tokenizer"))


@pytest.fixture(scope="session")
def granite_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No Granite tokenizer in the reference: a small trained byte-level BPE with Granite's
    control tokens (the same one the Granite test model gets)."""
    from guardwire_tools.tiny_model import FAMILY_RIGS, train_tokenizer

    spec = FAMILY_RIGS["granite-guardian-3"]
    tok = train_tokenizer(specials=spec.specials, bos=spec.bos, required=(spec.safe, spec.unsafe))
    out = tmp_path_factory.mktemp("granite-tokenizer")
    tok.save(str(out / "tokenizer.json"))
    return out
