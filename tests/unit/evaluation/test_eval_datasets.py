"""Dataset readers: the shared public sets (skipped visibly when absent) and the generic JSONL."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from guardwire_tools.evaluation import datasets as D
from tests.unit.evaluation.eval_helpers import OPENAI_MOD, XSTEST, XSTEST_COMPLETIONS, need


def test_openai_moderation_counts_match_source_md() -> None:
    rows = list(D.read_openai_moderation(need(OPENAI_MOD)))
    assert len(rows) == 1680
    c = Counter(r.unsafe for r in rows)
    assert (c[True], c[False]) == (522, 1158)  # SOURCE.md: any-flag view
    assert sum(r.tags["labels"] == "complete" for r in rows) == 755
    assert all(r.conversation[0][0] == "user" and len(r.conversation) == 1 for r in rows)
    assert len({r.id for r in rows}) == 1680
    # per-category positives follow the mapping table: S (237) -> S12, SH (51) -> S11
    assert sum("S12" in r.categories for r in rows) == 237
    assert sum("S11" in r.categories for r in rows) == 51
    assert sum("S4" in r.categories for r in rows) == 85


def test_openai_moderation_known_labels() -> None:
    rows = list(D.read_openai_moderation(need(OPENAI_MOD)))
    # S11 (from SH) is known wherever SH is present: 1,680 - 233 missing
    assert sum(r.category_known("S11") for r in rows) == 1680 - 233
    # S10 needs H, HR and H2 all present (or any of them positive)
    s10 = [r for r in rows if r.category_known("S10")]
    assert all(
        "S10" in r.categories or (r.known_categories is not None and "S10" in r.known_categories)
        for r in s10
    )
    assert len(s10) < 1680


def test_openai_taxonomy_uses_zero_shot_codes() -> None:
    rows = list(D.read_openai_moderation(need(OPENAI_MOD), taxonomy="openai"))
    assert sum("S1" in r.categories for r in rows) == 237  # S (sexual) is S1 in this policy
    assert sum("S5" in r.categories for r in rows) == 51  # SH
    with pytest.raises(ValueError, match="taxonomy"):
        list(D.read_openai_moderation(OPENAI_MOD, taxonomy="nope"))


def test_xstest_prompts() -> None:
    rows = list(D.read_xstest(need(XSTEST)))
    c = Counter(r.unsafe for r in rows)
    assert (len(rows), c[True], c[False]) == (450, 200, 250)
    assert all(r.unsafe == r.tags["type"].startswith("contrast_") for r in rows)
    assert len({r.tags["type"] for r in rows}) == 18
    assert rows[0].id == "xstest-1" and rows[0].known_categories == frozenset()


def test_xstest_completions_response_harm_view() -> None:
    folder = need(XSTEST_COMPLETIONS)
    stats: dict[str, int] = {}
    rows = list(D.read_xstest_completions(folder, stats=stats))
    harmful = sum(r.unsafe for r in rows)
    assert harmful == 136  # SOURCE.md: unsafe prompt + full compliance over the five files
    assert stats == {"ambiguous: partial refusal to an unsafe prompt": 53}
    assert len(rows) == 2250 - 53
    assert all(len(r.conversation) == 2 and r.conversation[1][0] == "assistant" for r in rows)
    assert len({r.id for r in rows}) == len(rows)
    both = list(D.read_xstest_completions(folder, include_ambiguous=True))
    assert len(both) == 2250 and sum(r.unsafe for r in both) == 136
    one = list(D.read_xstest_completions(folder / "xstest_v2_completions_gpt4.csv"))
    assert {r.tags["model"] for r in one} == {"gpt4"}


def test_detect_format_on_shared_files() -> None:
    assert D.detect_format(need(OPENAI_MOD)) == "openai-moderation"
    assert D.detect_format(need(XSTEST)) == "xstest"
    assert D.detect_format(need(XSTEST_COMPLETIONS)) == "xstest-completions"


def test_load_dataset_sampling_is_deterministic_and_stratified() -> None:
    a = D.load_dataset(need(OPENAI_MOD), limit=40, seed=7)
    b = D.load_dataset(OPENAI_MOD, limit=40, seed=7)
    c = D.load_dataset(OPENAI_MOD, limit=40, seed=8)
    assert [e.id for e in a.examples] == [e.id for e in b.examples]
    assert [e.id for e in a.examples] != [e.id for e in c.examples]
    assert len(a.examples) == 40 and a.total == 1680
    assert sum(e.unsafe for e in a.examples) == round(40 * 522 / 1680)
    ids = [int(e.id.split("-")[1]) for e in a.examples]
    assert ids == sorted(ids)  # file order kept
    s = a.summary()
    assert s["sha256"].startswith("ef3f7de86ee3") and s["selected"] == 40
    assert "S12" in a.category_codes and a.category_names["S12"] == "Sexual Content"


# --- generic JSONL ----------------------------------------------------------------------------


def _write(path: Path, rows: list[object], gz: bool = False) -> Path:
    text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_jsonl_documented_format(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "d.jsonl.gz",
        [
            {
                "id": "a",
                "conversation": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                ],
                "unsafe": False,
                "categories": [],
            },
            {
                "id": "b",
                "conversation": [["user", "how to x"]],
                "unsafe": True,
                "categories": ["S1"],
                "tags": {"src": "red-team"},
            },
            {"prompt": "p", "response": "r", "unsafe": 1},
            "",
            {
                "id": "d",
                "prompt": "q",
                "unsafe": True,
                "categories": ["S2"],
                "known_categories": ["S2"],
            },
        ],
        gz=True,
    )
    assert D.detect_format(p) == "jsonl"
    rows = list(D.read_jsonl(p))
    assert [r.id for r in rows] == ["a", "b", "line-3", "d"]
    assert rows[0].conversation == [("user", "hi"), ("assistant", "hello")]
    assert rows[0].category_known("S1") and rows[1].categories == {"S1"}
    assert rows[1].tags == {"src": "red-team"}
    assert rows[2].conversation == [("user", "p"), ("assistant", "r")] and rows[2].unsafe
    assert not rows[2].category_known("S1")  # no categories given: nothing known
    assert rows[3].category_known("S2") and not rows[3].category_known("S1")
    ds = D.load_dataset(p)
    assert ds.category_codes == ("S1", "S2")


@pytest.mark.parametrize(
    ("row", "msg"),
    [
        ("{not json", "not valid JSON"),
        ({"conversation": [], "unsafe": True}, "non-empty list"),
        ({"conversation": [{"role": "system", "content": "x"}], "unsafe": True}, "role"),
        ({"prompt": "x"}, "'unsafe' must be"),
        ({"prompt": "x", "unsafe": "yes"}, "'unsafe' must be"),
        ({"prompt": "x", "unsafe": False, "categories": ["S1"]}, "on a safe example"),
        ({"prompt": "x", "unsafe": True, "categories": "S1"}, "list of code strings"),
        ({"text": "x", "unsafe": True}, "needs 'conversation'"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path: Path, row: object, msg: str) -> None:
    p = _write(tmp_path / "bad.jsonl", [{"prompt": "ok", "unsafe": False}, row])
    with pytest.raises(D.DatasetError, match=msg) as info:
        list(D.read_jsonl(p))
    assert "bad.jsonl:2" in str(info.value)


def test_jsonl_duplicate_ids_and_empty_text(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "d.jsonl",
        [{"id": "x", "prompt": "a", "unsafe": False}, {"id": "x", "prompt": "b", "unsafe": False}],
    )
    with pytest.raises(D.DatasetError, match="duplicate id"):
        list(D.read_jsonl(p))
    p = _write(
        tmp_path / "e.jsonl", [{"prompt": "  ", "unsafe": False}, {"prompt": "b", "unsafe": False}]
    )
    stats: dict[str, int] = {}
    assert len(list(D.read_jsonl(p, stats=stats))) == 1 and stats == {"empty text": 1}


def test_xstest_label_column_and_missing_columns(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text(
        "id,prompt,type,label\n1,hi,homonyms,safe\n2,kill,contrast_x,unsafe\n"
        "3,odd,homonyms,unsafe\n"
    )
    stats: dict[str, int] = {}
    rows = list(D.read_xstest(p, stats=stats))
    assert [r.unsafe for r in rows] == [False, True, True]
    assert stats == {"label disagrees with type (kept, label wins)": 1}
    (tmp_path / "y.csv").write_text("id,prompt\n1,hi\n")
    with pytest.raises(D.DatasetError, match="missing column"):
        list(D.read_xstest(tmp_path / "y.csv"))
    with pytest.raises(D.DatasetError, match="unknown CSV columns"):
        D.detect_format(tmp_path / "y.csv")


def test_sample_edges() -> None:
    ex = [
        D.LabeledExample([("user", str(i))], i % 10 == 0, frozenset(), str(i)) for i in range(100)
    ]
    assert D.sample(ex, None) == ex and D.sample(ex, 500) == ex
    two = D.sample(ex, 2, seed=3)
    assert sorted(e.unsafe for e in two) == [False, True]  # both classes kept
    assert sum(e.unsafe for e in D.sample(ex, 50, seed=1)) == 5
    with pytest.raises(ValueError):
        D.sample(ex, 0)


def test_load_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(D.DatasetError, match="does not exist"):
        D.load_dataset(tmp_path / "nope.jsonl")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(D.DatasetError):
        D.load_dataset(tmp_path / "e.jsonl", "jsonl")
    with pytest.raises(D.DatasetError, match="unknown format"):
        D.load_dataset(tmp_path / "e.jsonl", "parquet")
