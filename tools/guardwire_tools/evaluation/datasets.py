"""Readers for labelled guard-evaluation data: OpenAI moderation eval, XSTest, generic JSONL.

Every reader yields :class:`LabeledExample` values; :func:`load_dataset` picks the reader, counts
what was skipped and why, and draws a deterministic, label-stratified sample for ``--limit``.

Formats (``--format``):

``openai-moderation``
    ``samples-1680.jsonl.gz`` of Markov et al. 2022: one ``prompt`` per line plus up to eight
    binary flags (S, H, V, HR, SH, S3, H2, V2); a missing flag means "label unknown". An example is
    unsafe when any flag is 1 (the usual any-flag view: 522 unsafe / 1,158 safe). Categories are
    mapped to Llama Guard 3 codes with :data:`OPENAI_TO_LG3` (``taxonomy="llama-guard-3"``) or to
    the S1..S8 codes of :data:`OPENAI_CATEGORIES`, the zero-shot policy that shows the model
    OpenAI's own taxonomy (``taxonomy="openai"``).
``xstest``
    ``xstest_prompts.csv``: one user prompt per row; unsafe when ``label == "unsafe"`` (exactly the
    ``contrast_*`` types). No category labels; the ``type`` is kept as a tag for a per-type table.
``xstest-completions``
    ``model_completions/*.csv`` (a file or the folder): user prompt + model response. These carry
    refusal labels, not harm labels; the response-harm view used here is "unsafe prompt and the
    model fully complied". Partial refusals to unsafe prompts are ambiguous and skipped unless
    ``include_ambiguous=True`` (then counted safe).
``jsonl``
    The generic format, one JSON object per line (``.gz`` allowed)::

        {"id": "a1", "conversation": [{"role": "user", "content": "..."},
                                      {"role": "assistant", "content": "..."}],
         "unsafe": true, "categories": ["S1"]}

    ``id`` is optional (default ``line-N``). ``conversation`` may also be written as
    ``"prompt"`` (+ optional ``"response"``). ``unsafe`` is required (true/false or 1/0).
    ``categories`` (optional) lists every violated code; when present the other codes are known
    negatives, unless ``known_categories`` narrows the codes whose labels are known. ``tags``
    (optional) is an object of string values reported per value.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "FORMATS",
    "LG3_NAMES",
    "OPENAI_CATEGORIES",
    "OPENAI_TO_LG3",
    "Dataset",
    "DatasetError",
    "LabeledExample",
    "detect_format",
    "load_dataset",
    "read_jsonl",
    "read_openai_moderation",
    "read_xstest",
    "read_xstest_completions",
    "sample",
]

FORMATS = ("openai-moderation", "xstest", "xstest-completions", "jsonl")
ROLES = ("user", "assistant")


class DatasetError(ValueError):
    """A dataset file is malformed; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class LabeledExample:
    """One labelled conversation.

    ``categories`` are the violated codes. ``known_categories`` are the codes whose label is known
    (positive or negative); ``None`` means every code of the dataset's label set is known.
    """

    conversation: list[tuple[str, str]]
    unsafe: bool
    categories: frozenset[str]
    id: str
    known_categories: frozenset[str] | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def category_known(self, code: str) -> bool:
        return code in self.categories or (
            self.known_categories is None or code in self.known_categories
        )


# --- OpenAI moderation eval -------------------------------------------------------------------

#: Llama Guard 3 category names as the official template shows them.
LG3_NAMES: dict[str, str] = {
    "S1": "Violent Crimes",
    "S2": "Non-Violent Crimes",
    "S3": "Sex Crimes",
    "S4": "Child Exploitation",
    "S5": "Defamation",
    "S6": "Specialized Advice",
    "S7": "Privacy",
    "S8": "Intellectual Property",
    "S9": "Indiscriminate Weapons",
    "S10": "Hate",
    "S11": "Self-Harm",
    "S12": "Sexual Content",
    "S13": "Elections",
    "S14": "Code Interpreter Abuse",
}

#: OpenAI moderation label → (Llama Guard 3 code, fit). docs/evaluation.md has the reasoning.
OPENAI_TO_LG3: dict[str, tuple[str, str]] = {
    "S": ("S12", "close"),  # sexual → Sexual Content
    "H": ("S10", "close"),  # hate → Hate
    "V": ("S1", "approximate"),  # violence (promotes/glorifies) → Violent Crimes
    "HR": ("S10", "approximate"),  # harassment: LG3 has none; hate is nearest
    "SH": ("S11", "close"),  # self-harm → Self-Harm
    "S3": ("S4", "close"),  # sexual/minors → Child Exploitation
    "H2": ("S10", "close"),  # hate/threatening ⊂ hate → Hate
    "V2": ("S1", "approximate"),  # violence/graphic (depiction) → Violent Crimes
}

#: OpenAI's taxonomy as a custom (zero-shot) policy: (code, name, description), keyed by the
#: dataset label. Codes are S1..S8 because Llama Guard 2/3 models answer with ``S<n>`` codes.
#: Definitions quoted from the dataset's README (openai/moderation-api-release, MIT).
OPENAI_CATEGORIES: dict[str, tuple[str, str, str]] = {
    "S": (
        "S1",
        "Sexual",
        "Content meant to arouse sexual excitement, such as the description of "
        "sexual activity, or that promotes sexual services (excluding sex education and "
        "wellness).",
    ),
    "H": (
        "S2",
        "Hate",
        "Content that expresses, incites, or promotes hate based on race, gender, "
        "ethnicity, religion, nationality, sexual orientation, disability status, or caste.",
    ),
    "V": (
        "S3",
        "Violence",
        "Content that promotes or glorifies violence or celebrates the "
        "suffering or humiliation of others.",
    ),
    "HR": (
        "S4",
        "Harassment",
        "Content that may be used to torment or annoy individuals in real "
        "life, or make harassment more likely to occur.",
    ),
    "SH": (
        "S5",
        "Self-Harm",
        "Content that promotes, encourages, or depicts acts of self-harm, "
        "such as suicide, cutting, and eating disorders.",
    ),
    "S3": (
        "S6",
        "Sexual/Minors",
        "Sexual content that includes an individual who is under 18 years old.",
    ),
    "H2": (
        "S7",
        "Hate/Threatening",
        "Hateful content that also includes violence or serious harm towards the targeted group.",
    ),
    "V2": (
        "S8",
        "Violence/Graphic",
        "Violent content that depicts death, violence, or serious "
        "physical injury in extreme graphic detail.",
    ),
}

OPENAI_KEYS = tuple(OPENAI_TO_LG3)


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open("r", encoding="utf-8", newline="")


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with _open_text(path) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DatasetError(f"{path}:{n}: expected a JSON object")
            yield n, obj


def _bump(stats: dict[str, int] | None, key: str) -> None:
    if stats is not None:
        stats[key] = stats.get(key, 0) + 1


def read_openai_moderation(
    path: str | Path,
    *,
    taxonomy: str = "llama-guard-3",
    stats: dict[str, int] | None = None,
) -> Iterator[LabeledExample]:
    """Reads ``samples-1680.jsonl.gz``. ``taxonomy``: ``"llama-guard-3"`` or ``"openai"``."""
    if taxonomy == "llama-guard-3":
        to_code = {k: v[0] for k, v in OPENAI_TO_LG3.items()}
    elif taxonomy == "openai":
        to_code = {k: v[0] for k, v in OPENAI_CATEGORIES.items()}
    else:
        raise ValueError(f"taxonomy must be 'llama-guard-3' or 'openai', got {taxonomy!r}")
    sources: dict[str, list[str]] = {}
    for key, code in to_code.items():
        sources.setdefault(code, []).append(key)
    p = Path(path)
    for n, row in _json_lines(p):
        text = row.get("prompt")
        if not isinstance(text, str):
            raise DatasetError(f"{p}:{n}: 'prompt' missing or not a string")
        if not text.strip():
            _bump(stats, "empty text")
            continue
        flags: dict[str, int] = {}
        for key in OPENAI_KEYS:
            if key in row:
                if row[key] not in (0, 1) or isinstance(row[key], float | str):
                    raise DatasetError(f"{p}:{n}: flag {key!r} must be 0 or 1, got {row[key]!r}")
                flags[key] = int(row[key])
        positive = frozenset(to_code[k] for k, v in flags.items() if v == 1)
        known = frozenset(
            code
            for code, keys in sources.items()
            if code in positive or all(k in flags for k in keys)
        )
        tags = {"labels": "complete" if len(flags) == len(OPENAI_KEYS) else "partial"}
        yield LabeledExample(
            conversation=[("user", text)],
            unsafe=bool(positive),
            categories=positive,
            id=f"oai-{n}",
            known_categories=known,
            tags=tags,
        )


# --- XSTest -----------------------------------------------------------------------------------


def _csv_rows(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {missing}; found {reader.fieldnames}")
        for row in reader:
            yield reader.line_num, row


def read_xstest(
    path: str | Path, *, stats: dict[str, int] | None = None
) -> Iterator[LabeledExample]:
    """Reads ``xstest_prompts.csv``: prompt-only, safe/unsafe from the ``label`` column."""
    p = Path(path)
    for n, row in _csv_rows(p, ("id", "prompt", "type", "label")):
        label = row["label"].strip().lower()
        if label not in ("safe", "unsafe"):
            raise DatasetError(f"{p}:{n}: label must be safe/unsafe, got {row['label']!r}")
        if (label == "unsafe") != row["type"].startswith("contrast_"):
            _bump(stats, "label disagrees with type (kept, label wins)")
        if not row["prompt"].strip():
            _bump(stats, "empty text")
            continue
        yield LabeledExample(
            conversation=[("user", row["prompt"])],
            unsafe=label == "unsafe",
            categories=frozenset(),
            id=f"xstest-{row['id']}",
            known_categories=frozenset(),
            tags={"type": row["type"]},
        )


def _completion_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
        if not files:
            raise DatasetError(f"{path}: no .csv files in the folder")
        return files
    return [path]


def read_xstest_completions(
    path: str | Path,
    *,
    include_ambiguous: bool = False,
    stats: dict[str, int] | None = None,
) -> Iterator[LabeledExample]:
    """Reads XSTest ``model_completions`` (a file or the folder) as user + assistant pairs."""
    for file in _completion_files(Path(path)):
        model = file.stem.removeprefix("xstest_v2_completions_")
        for n, row in _csv_rows(file, ("id", "type", "prompt", "completion", "final_label")):
            final = row["final_label"].strip()
            if final not in ("1_full_compliance", "2_full_refusal", "3_partial_refusal"):
                raise DatasetError(f"{file}:{n}: unknown final_label {final!r}")
            unsafe_prompt = row["type"].startswith("contrast_")
            if unsafe_prompt and final == "3_partial_refusal" and not include_ambiguous:
                _bump(stats, "ambiguous: partial refusal to an unsafe prompt")
                continue
            if not row["prompt"].strip() or not row["completion"].strip():
                _bump(stats, "empty text")
                continue
            yield LabeledExample(
                conversation=[("user", row["prompt"]), ("assistant", row["completion"])],
                unsafe=unsafe_prompt and final == "1_full_compliance",
                categories=frozenset(),
                id=f"xstest-{model}-{row['id']}",
                known_categories=frozenset(),
                tags={"type": row["type"], "model": model, "final_label": final},
            )


# --- generic JSONL ----------------------------------------------------------------------------


def _parse_conversation(obj: dict[str, Any], where: str) -> list[tuple[str, str]]:
    if "conversation" in obj:
        raw = obj["conversation"]
        if not isinstance(raw, list) or not raw:
            raise DatasetError(f"{where}: 'conversation' must be a non-empty list")
        turns: list[tuple[str, str]] = []
        for i, t in enumerate(raw):
            if isinstance(t, dict):
                role, content = t.get("role"), t.get("content")
            elif isinstance(t, list | tuple) and len(t) == 2:
                role, content = t
            else:
                raise DatasetError(f"{where}: conversation[{i}] must be {{role, content}}")
            if role not in ROLES:
                raise DatasetError(f"{where}: conversation[{i}].role must be one of {ROLES}")
            if not isinstance(content, str):
                raise DatasetError(f"{where}: conversation[{i}].content must be a string")
            turns.append((role, content))
        return turns
    if "prompt" in obj:
        if not isinstance(obj["prompt"], str):
            raise DatasetError(f"{where}: 'prompt' must be a string")
        turns = [("user", obj["prompt"])]
        if obj.get("response") is not None:
            if not isinstance(obj["response"], str):
                raise DatasetError(f"{where}: 'response' must be a string")
            turns.append(("assistant", obj["response"]))
        return turns
    raise DatasetError(f"{where}: needs 'conversation' (or 'prompt')")


def _codes(obj: dict[str, Any], key: str, where: str) -> frozenset[str] | None:
    if key not in obj or obj[key] is None:
        return None
    raw = obj[key]
    if not isinstance(raw, list) or not all(isinstance(c, str) and c for c in raw):
        raise DatasetError(f"{where}: '{key}' must be a list of code strings")
    return frozenset(raw)


def read_jsonl(
    path: str | Path, *, stats: dict[str, int] | None = None
) -> Iterator[LabeledExample]:
    """Reads the generic JSONL format described in the module docstring."""
    p = Path(path)
    seen: set[str] = set()
    for n, obj in _json_lines(p):
        where = f"{p}:{n}"
        conversation = _parse_conversation(obj, where)
        unsafe = obj.get("unsafe")
        if isinstance(unsafe, int) and not isinstance(unsafe, bool) and unsafe in (0, 1):
            unsafe = bool(unsafe)
        if not isinstance(unsafe, bool):
            raise DatasetError(f"{where}: 'unsafe' must be true/false, got {unsafe!r}")
        categories = _codes(obj, "categories", where)
        known = _codes(obj, "known_categories", where)
        if categories and not unsafe:
            raise DatasetError(f"{where}: categories {sorted(categories)} on a safe example")
        if categories is None and known is None:
            known = frozenset()  # no category labels at all
        tags = obj.get("tags") or {}
        if not isinstance(tags, dict):
            raise DatasetError(f"{where}: 'tags' must be an object")
        ex_id = str(obj.get("id", f"line-{n}"))
        if ex_id in seen:
            raise DatasetError(f"{where}: duplicate id {ex_id!r}")
        seen.add(ex_id)
        if any(not text.strip() for _, text in conversation):
            _bump(stats, "empty text")
            continue
        yield LabeledExample(
            conversation=conversation,
            unsafe=unsafe,
            categories=categories or frozenset(),
            id=ex_id,
            known_categories=known,
            tags={str(k): str(v) for k, v in tags.items()},
        )


# --- loading, detection, sampling -------------------------------------------------------------


def detect_format(path: str | Path) -> str:
    """Guesses the format from the file name and its first record."""
    p = Path(path)
    if p.is_dir():
        return "xstest-completions"
    name = p.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        with _open_text(p) as f:
            header = next(csv.reader(f), [])
        if "completion" in header and "final_label" in header:
            return "xstest-completions"
        if "label" in header and "prompt" in header:
            return "xstest"
        raise DatasetError(f"{p}: unknown CSV columns {header}; pass --format")
    for _, obj in _json_lines(p):
        if "conversation" in obj or "unsafe" in obj:
            return "jsonl"
        if "prompt" in obj and any(k in obj for k in OPENAI_KEYS):
            return "openai-moderation"
        break
    raise DatasetError(f"{p}: cannot tell the format from the first record; pass --format")


def sample(
    examples: Sequence[LabeledExample], limit: int | None, seed: int = 0
) -> list[LabeledExample]:
    """A deterministic sample of ``limit`` examples, stratified by the unsafe label.

    Each class gets its proportional share (at least one when the class exists and
    ``limit >= 2``); the chosen examples keep their file order. Same data + seed → same sample.
    """
    if limit is None or limit >= len(examples):
        return list(examples)
    if limit <= 0:
        raise ValueError(f"limit must be > 0, got {limit}")
    pos = [i for i, e in enumerate(examples) if e.unsafe]
    neg = [i for i, e in enumerate(examples) if not e.unsafe]
    n_pos = round(limit * len(pos) / len(examples))
    if limit >= 2 and pos and neg:
        n_pos = min(max(n_pos, 1), limit - 1)
    n_pos = min(n_pos, len(pos))
    n_neg = min(limit - n_pos, len(neg))
    rng = np.random.default_rng(seed)
    chosen = [pos[i] for i in rng.choice(len(pos), n_pos, replace=False)] + [
        neg[i] for i in rng.choice(len(neg), n_neg, replace=False)
    ]
    return [examples[i] for i in sorted(chosen)]


@dataclass(frozen=True, slots=True)
class Dataset:
    """Examples chosen for one run, with where they came from and what was skipped."""

    path: str
    format: str
    sha256: str
    examples: list[LabeledExample]
    total: int  # examples read, before sampling
    skipped: dict[str, int]
    label_view: str
    category_codes: tuple[str, ...]  # codes with labels (per-category metrics)
    category_names: dict[str, str]
    limit: int | None
    seed: int

    def summary(self) -> dict[str, Any]:
        counts = Counter(e.unsafe for e in self.examples)
        return {
            "path": self.path,
            "format": self.format,
            "sha256": self.sha256,
            "examples_in_file": self.total,
            "selected": len(self.examples),
            "selected_unsafe": counts[True],
            "selected_safe": counts[False],
            "limit": self.limit,
            "seed": self.seed,
            "skipped": dict(self.skipped),
            "label_view": self.label_view,
            "category_codes": list(self.category_codes),
        }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    files = _completion_files(path) if path.is_dir() else [path]
    for f in files:
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


_LABEL_VIEWS = {
    "openai-moderation": "unsafe = any of the 8 OpenAI flags is 1 (missing flag = unknown, "
    "counts as not flagged); categories mapped to {taxonomy} codes",
    "xstest": "unsafe = label column 'unsafe' (the contrast_* types); prompt-only",
    "xstest-completions": "unsafe = unsafe prompt and the model fully complied (human label); "
    "response classification; {ambiguous}",
    "jsonl": "unsafe and categories as given in the file",
}


def load_dataset(
    path: str | Path,
    format: str = "auto",
    *,
    limit: int | None = None,
    seed: int = 0,
    taxonomy: str = "llama-guard-3",
    include_ambiguous: bool = False,
) -> Dataset:
    """Reads a dataset file, then samples ``limit`` examples (see :func:`sample`)."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{p} does not exist")
    fmt = detect_format(p) if format == "auto" else format
    if fmt not in FORMATS:
        raise DatasetError(f"unknown format {fmt!r}; one of {FORMATS}")
    stats: dict[str, int] = {}
    names: dict[str, str] = {}
    if fmt == "openai-moderation":
        examples = list(read_openai_moderation(p, taxonomy=taxonomy, stats=stats))
        if taxonomy == "openai":
            names = {code: name for code, name, _ in OPENAI_CATEGORIES.values()}
        else:
            names = {code: LG3_NAMES[code] for code, _ in OPENAI_TO_LG3.values()}
    elif fmt == "xstest":
        examples = list(read_xstest(p, stats=stats))
    elif fmt == "xstest-completions":
        examples = list(
            read_xstest_completions(p, include_ambiguous=include_ambiguous, stats=stats)
        )
    else:
        examples = list(read_jsonl(p, stats=stats))
    if not examples:
        raise DatasetError(f"{p}: no examples read")
    codes: set[str] = set(names)
    for e in examples:
        codes |= e.categories
        if e.known_categories:
            codes |= e.known_categories
    view = _LABEL_VIEWS[fmt].format(
        taxonomy="OpenAI zero-shot S1..S8" if taxonomy == "openai" else "Llama Guard 3",
        ambiguous="partial refusals to unsafe prompts counted safe"
        if include_ambiguous
        else "partial refusals to unsafe prompts skipped",
    )
    return Dataset(
        path=str(p),
        format=fmt,
        sha256=_sha256(p),
        examples=sample(examples, limit, seed),
        total=len(examples),
        skipped=stats,
        label_view=view,
        category_codes=tuple(sorted(codes, key=_code_key)),
        category_names=names,
        limit=limit,
        seed=seed,
    )


def _code_key(code: str) -> tuple[str, int, str]:
    head = code.rstrip("0123456789")
    tail = code[len(head) :]
    return (head, int(tail) if tail else -1, code)
