"""Default taxonomies match the official templates; exclusions keep the original codes."""

from __future__ import annotations

import re

import pytest

from guardwire_server.adapters.taxonomy import (
    DEFAULT_POLICIES,
    LLAMA_GUARD_3_1B,
    LLAMA_GUARD_3_8B,
    check_policy,
    exclude,
)
from guardwire_server.domain import Category, Policy


def test_1b_default_matches_template_dict(template_texts: dict[str, str]) -> None:
    pairs = re.findall(r'"(S\d+)": "([^"]+)"', template_texts["1b"])
    assert [(c.code, c.name) for c in LLAMA_GUARD_3_1B.categories] == pairs
    assert len(pairs) == 13


def test_8b_default_matches_template_lines(template_texts: dict[str, str]) -> None:
    pairs = re.findall(r"^(S\d+): (.+)$", template_texts["8b"], flags=re.MULTILINE)
    assert [(c.code, c.name) for c in LLAMA_GUARD_3_8B.categories] == pairs
    assert pairs[-1] == ("S14", "Code Interpreter Abuse.")


def test_registry_of_defaults() -> None:
    assert DEFAULT_POLICIES["llama-guard-3-1b"] is LLAMA_GUARD_3_1B
    assert DEFAULT_POLICIES["llama-guard-3-8b"] is LLAMA_GUARD_3_8B
    assert LLAMA_GUARD_3_1B.name == LLAMA_GUARD_3_8B.name == ""
    assert all(c.description == "" for c in LLAMA_GUARD_3_8B.categories)


def test_exclude_keeps_codes() -> None:
    p = exclude(LLAMA_GUARD_3_1B, ["S6", "S10", "S6"])
    codes = [c.code for c in p.categories]
    assert codes == [f"S{i}" for i in range(1, 14) if i not in (6, 10)]
    assert p.by_code()["S7"].name == "Privacy."
    assert p.name == ""
    assert exclude(LLAMA_GUARD_3_8B, ["S14"], name="no-code").name == "no-code"
    assert exclude(LLAMA_GUARD_3_8B, []).categories == LLAMA_GUARD_3_8B.categories


def test_exclude_errors() -> None:
    with pytest.raises(ValueError, match="S14"):
        exclude(LLAMA_GUARD_3_1B, ["S1", "S14"])  # 1B has no S14
    with pytest.raises(ValueError, match="nothing to assess"):
        exclude(LLAMA_GUARD_3_1B, [c.code for c in LLAMA_GUARD_3_1B.categories])


def test_check_policy() -> None:
    check_policy(LLAMA_GUARD_3_8B)
    bad = [
        Policy(()),
        Policy((Category("", "x"),)),
        Policy((Category("S1", "x"), Category("S1", "y"))),
        Policy((Category("S1\n", "x"),)),
        Policy((Category("S1", "  "),)),
    ]
    for policy in bad:
        with pytest.raises(ValueError):
            check_policy(policy)
