"""Named policies: parsing with errors that name the key, resolution without renumbering, stable
hashes, the settings integration and the reloader (atomic swap; a bad file keeps the old one)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from guardwire_server.adapters.base import policy_id
from guardwire_server.config import ConfigError, resolve_settings
from guardwire_server.domain import Category, Policy
from guardwire_server.policies import (
    PolicyReloader,
    build_catalog,
    parse_policies,
    read_policy_file,
)
from guardwire_server.validation import PolicyCatalog

DEFAULT = Policy(
    categories=tuple(Category(f"S{i}", f"Name {i}.") for i in range(1, 8)),
)
GOOD = {
    "no-s6": {"base": "default", "excluded_codes": ["S6"]},
    "support.bot_v2": {
        "categories": [
            {"code": "S1", "name": "Violent Crimes."},
            {"code": "X1", "name": " Competitors. ", "description": "  Names a rival.  "},
            {"code": "X2", "name": "Spam."},
        ],
        "excluded_codes": ["X2"],
    },
}


def test_parse_and_build() -> None:
    defs = parse_policies(GOOD)
    assert [d.id for d in defs] == ["no-s6", "support.bot_v2"]
    catalog = build_catalog(defs, DEFAULT)
    assert isinstance(catalog, PolicyCatalog) and catalog.default is DEFAULT
    no_s6 = catalog.named["no-s6"]
    # codes are kept, never renumbered: S5 is followed by S7
    assert [c.code for c in no_s6.categories] == ["S1", "S2", "S3", "S4", "S5", "S7"]
    assert no_s6.categories[5] == DEFAULT.categories[6]
    assert no_s6.name == "no-s6"
    bot = catalog.named["support.bot_v2"]
    assert bot.categories == (
        Category("S1", "Violent Crimes."),
        Category("X1", "Competitors.", "Names a rival."),  # stripped
    )
    assert parse_policies(None) == () and parse_policies({}) == ()


def test_hash_is_stable_and_content_addressed() -> None:
    a = build_catalog(parse_policies(GOOD), DEFAULT).named["no-s6"]
    b = build_catalog(parse_policies(GOOD), DEFAULT).named["no-s6"]
    assert a.policy_hash == b.policy_hash
    assert policy_id(a) == f"no-s6@{a.policy_hash}"
    changed = dict(GOOD, **{"no-s6": {"base": "default", "excluded_codes": ["S5"]}})
    c = build_catalog(parse_policies(changed), DEFAULT).named["no-s6"]
    assert c.policy_hash != a.policy_hash and policy_id(c) != policy_id(a)
    assert policy_id(DEFAULT) == DEFAULT.policy_hash  # unnamed: the hash alone


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (["x"], "policies: must be a mapping"),
        ({"bad id": {"base": "default"}}, "invalid policy id 'bad id'"),
        ({"-x": {"base": "default"}}, "invalid policy id '-x'"),
        ({"default": {"base": "default"}}, "policies.default: 'default' is reserved"),
        ({"p": "S1"}, "policies.p: must be a mapping"),
        ({"p": {"base": "default", "categories": []}}, "policies.p: needs exactly one"),
        ({"p": {}}, "policies.p: needs exactly one"),
        ({"p": {"base": "strict"}}, "policies.p.base: only 'default'"),
        ({"p": {"base": "default", "exclude": ["S1"]}}, "policies.p: unknown key(s) ['exclude']"),
        ({"p": {"categories": []}}, "policies.p.categories: must be a non-empty list"),
        ({"p": {"categories": ["S1"]}}, "policies.p.categories[0]: must be a mapping"),
        ({"p": {"categories": [{"name": "x"}]}}, "policies.p.categories[0].code: is required"),
        ({"p": {"categories": [{"code": "S1"}]}}, "policies.p.categories[0].name: is required"),
        (
            {"p": {"categories": [{"code": "S 1", "name": "x"}]}},
            "policies.p.categories[0].code: must be 1-16 characters",
        ),
        (
            {"p": {"categories": [{"code": 1, "name": "x"}]}},
            "policies.p.categories[0].code: must be a string",
        ),
        (
            {"p": {"categories": [{"code": "A", "name": "x"}, {"code": "A", "name": "y"}]}},
            "policies.p.categories[1].code: duplicate code 'A'",
        ),
        (
            {"p": {"categories": [{"code": "A", "name": "  "}]}},
            "policies.p.categories[0].name: must be one non-empty line",
        ),
        (
            {"p": {"categories": [{"code": "A", "name": "a\nb"}]}},
            "policies.p.categories[0].name: must be one non-empty line",
        ),
        (
            {"p": {"categories": [{"code": "A", "name": "a", "description": "d" * 4097}]}},
            "policies.p.categories[0].description: must be at most 4096",
        ),
        (
            {"p": {"categories": [{"code": "A", "name": "a", "desc": "d"}]}},
            "policies.p.categories[0]: unknown key(s) ['desc']",
        ),
        (
            {"p": {"base": "default", "excluded_codes": "S1"}},
            "policies.p.excluded_codes: must be a list",
        ),
        (
            {"p": {"categories": [{"code": "A", "name": "a"}], "excluded_codes": ["B"]}},
            "policies.p.excluded_codes[0]: 'B' is not a code of the policy",
        ),
        (
            {"p": {"categories": [{"code": "A", "name": "a"}], "excluded_codes": ["A"]}},
            "policies.p.excluded_codes: excludes every category",
        ),
    ],
)
def test_errors_name_the_key(raw: Any, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_policies(raw)
    assert where in str(err.value)


def test_build_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"policies\.p\.excluded_codes\[1\]: 'S9' is not"):
        build_catalog(parse_policies({"p": {"base": "default", "excluded_codes": ["S1", "S9"]}}),
                      DEFAULT)  # fmt: skip
    everything = [c.code for c in DEFAULT.categories]
    with pytest.raises(ConfigError, match="excludes every category"):
        build_catalog(parse_policies({"p": {"base": "default", "excluded_codes": everything}}),
                      DEFAULT)  # fmt: skip

    def check(policy: Policy) -> None:
        if any(c.code == "X1" for c in policy.categories):
            raise ValueError("X1 has no definition")

    with pytest.raises(ConfigError, match=r"policies\.support\.bot_v2: .*X1 has no definition"):
        build_catalog(parse_policies(GOOD), DEFAULT, check=check)


def test_settings_carry_the_policies_and_the_file(tmp_path: Path) -> None:
    file_data = {"threshold": 0.4, "policies": GOOD}
    s = resolve_settings(flags={"config": "/etc/gw.yaml"}, env={}, file_data=file_data)
    assert [d.id for d in s.policies] == ["no-s6", "support.bot_v2"]
    assert s.config_file == "/etc/gw.yaml"
    assert "policies" not in s.redacted()
    s = resolve_settings(env={"GUARDWIRE_CONFIG": "/x.yaml"}, file_data={})
    assert s.config_file == "/x.yaml" and s.policies == ()
    with pytest.raises(ConfigError, match=r"policies\.p\.base"):
        resolve_settings(file_data={"policies": {"p": {"base": "other"}}})
    with pytest.raises(ConfigError, match="unknown key"):
        resolve_settings(file_data={"policy": {}})  # a typo of a file-only key still fails


def _write(path: Path, policies: Any) -> None:
    path.write_text(yaml.safe_dump({"threshold": 0.5, "policies": policies}))


def test_reloader_swaps_atomically_and_keeps_the_old_on_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gw.yaml"
    _write(path, GOOD)
    guard = SimpleNamespace(catalog=build_catalog(read_policy_file(path), DEFAULT))
    reloader = PolicyReloader(guard, path)
    first = guard.catalog
    assert not reloader.changed()

    _write(path, {"only": {"base": "default", "excluded_codes": ["S1"]}})
    assert reloader.changed()
    assert reloader.reload() is True
    assert set(guard.catalog.named) == {"only"} and guard.catalog is not first
    assert guard.catalog.default is DEFAULT
    assert not reloader.changed()

    good = guard.catalog
    path.write_text("policies: {broken: {base: nope}}\n")
    with caplog.at_level(logging.ERROR, logger="guardwire_server.policies"):
        assert reloader.reload() is False
    assert guard.catalog is good  # the old catalog stays
    assert "policies.broken.base" in caplog.text and "keeping the old policies" in caplog.text
    path.write_text("policies: [unclosed\n")
    assert reloader.reload() is False and guard.catalog is good
    path.unlink()
    assert reloader.reload() is False and guard.catalog is good
    assert (reloader.reloads, reloader.failures) == (1, 3)


@pytest.mark.parametrize(
    "bad",
    ["polices: {}\n", "threshold: 2\n", "unix_socket_mode: '0666'\n"],
    ids=["unknown-key", "bad-value", "world-writable"],
)
def test_reload_validates_the_file_like_start_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: str
) -> None:
    """A file that a restart refuses (exit 2) must not be accepted by a reload either."""
    path = tmp_path / "gw.yaml"
    _write(path, GOOD)
    guard = SimpleNamespace(catalog=build_catalog(read_policy_file(path), DEFAULT))
    reloader = PolicyReloader(guard, path)
    old = guard.catalog
    path.write_text(yaml.safe_dump({"policies": {"only": {"base": "default"}}}) + bad)
    with pytest.raises(ConfigError):
        resolve_settings(file_data=yaml.safe_load(path.read_text()))  # what start-up says
    with caplog.at_level(logging.INFO, logger="guardwire_server.policies"):
        assert reloader.reload() is False
    assert guard.catalog is old and set(old.named) == {"no-s6", "support.bot_v2"}
    assert "keeping the old policies" in caplog.text and "policies reloaded" not in caplog.text


async def test_watch_reloads_on_change(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    _write(path, GOOD)
    guard = SimpleNamespace(catalog=build_catalog(read_policy_file(path), DEFAULT))
    reloader = PolicyReloader(guard, path)
    task = asyncio.create_task(reloader.watch(0.02))
    try:
        _write(path, {"new": {"base": "default"}})
        for _ in range(200):
            if "new" in guard.catalog.named:
                break
            await asyncio.sleep(0.01)
        assert set(guard.catalog.named) == {"new"}
    finally:
        task.cancel()
