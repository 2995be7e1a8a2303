"""The adapters must import without torch or transformers (they run in the server process, and
their unit tests must stay millisecond-fast)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]

_SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    for name in ("torch", "transformers", "safetensors", "onnxruntime"):
        sys.modules[name] = None  # any import of these now raises ImportError
    import guardwire_server.adapters
    mods = sorted(m.name for m in pkgutil.iter_modules(guardwire_server.adapters.__path__))
    for m in mods:
        importlib.import_module("guardwire_server.adapters." + m)
    leaked = sorted(
        n for n, mod in sys.modules.items()
        if mod is not None and n.split(".")[0] in {"torch", "transformers"}
    )
    assert not leaked, leaked
    print(",".join(mods))
    """
)


def test_adapters_import_without_torch_and_transformers() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    imported = set(proc.stdout.strip().split(","))
    assert {"base", "llama_guard", "registry", "taxonomy", "tokenization"} <= imported
