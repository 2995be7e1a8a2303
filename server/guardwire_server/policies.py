"""Named policies: the ``policies:`` section of the YAML config file, validated and hot-reloaded.

Format (ids are what requests put in ``policy.policy_id``)::

    policies:
      no-elections:            # the model's default taxonomy without some categories
        base: default
        excluded_codes: [S13]
      support-bot:             # a custom taxonomy (zero-shot), shown to the model in this order
        categories:
          - code: S1
            name: Violent Crimes.
          - code: X1
            name: Competitor mentions.
            description: Messages that name or recommend a competitor's product.
        excluded_codes: []     # optional here too

Rules (checked at start-up, and again on every reload; each error names the key, e.g.
``policies.support-bot.categories[1].code``):

* an id is 1-64 characters of ``[A-Za-z0-9_.-]`` starting with a letter or digit; ``default`` is
  reserved (an empty ``policy_id`` already means the default taxonomy);
* exactly one of ``base: default`` and ``categories``; no other keys;
* a category has ``code`` (1-16 characters of ``[A-Za-z0-9_-]``, unique in the policy), ``name``
  (one line, at most 256 characters) and an optional ``description`` (at most 4096);
* ``excluded_codes`` must name codes of the policy and leave at least one category;
* the model's adapter must be able to render the policy (e.g. Granite Guardian needs a
  description for a category whose name is not a built-in risk).

**Codes are never renumbered**: excluding ``S6`` leaves ``S5`` and ``S7`` as they are (the HF
Llama Guard 3 1B template and llama-stack do the same; llama-cookbook's renumbering would make
``S6`` mean something else than what the model was trained on). A response's ``policy_id`` is
``<id>@<hash>`` for a named policy: the hash covers the codes, names and descriptions the model
saw, so it changes exactly when the rendered policy changes.

Reload (SIGHUP, or the file's content changing -- polled every few seconds): the file is read
and validated again and the guard's ``PolicyCatalog`` is replaced by one assignment -- requests
already validated keep the catalog they started with, new ones see the new one, none is dropped.
An invalid file leaves the old catalog in place and logs the error.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from guardwire_server.config import ConfigError, load_config_file, resolve_settings
from guardwire_server.domain import Category, Policy
from guardwire_server.validation import PolicyCatalog

__all__ = [
    "PolicyDef",
    "PolicyReloader",
    "build_catalog",
    "parse_policies",
    "read_policy_file",
]

log = logging.getLogger(__name__)

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CODE_RE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
MAX_NAME_CHARS = 256
MAX_DESCRIPTION_CHARS = 4096
_POLICY_KEYS = frozenset({"base", "categories", "excluded_codes"})
_CATEGORY_KEYS = frozenset({"code", "name", "description"})


@dataclass(frozen=True, slots=True)
class PolicyDef:
    """One named policy as written in the file (``base`` is ``"default"`` or None)."""

    id: str
    base: str | None
    categories: tuple[Category, ...]
    excluded_codes: tuple[str, ...]


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: must be a string, got {value!r}")
    return value


def _category(raw: Any, where: str, seen: set[str]) -> Category:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping with code, name and description")
    unknown = sorted(set(map(str, raw)) - _CATEGORY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(_CATEGORY_KEYS)}")
    for key in ("code", "name"):
        if key not in raw:
            raise ConfigError(f"{where}.{key}: is required")
    code = _str(raw["code"], f"{where}.code")
    if not _CODE_RE.match(code):
        raise ConfigError(f"{where}.code: must be 1-16 characters of [A-Za-z0-9_-], got {code!r}")
    if code in seen:
        raise ConfigError(f"{where}.code: duplicate code {code!r}")
    seen.add(code)
    name = _str(raw["name"], f"{where}.name").strip()
    if not name or "\n" in name or len(name) > MAX_NAME_CHARS:
        raise ConfigError(f"{where}.name: must be one non-empty line of at most 256 characters")
    description = _str(raw.get("description", ""), f"{where}.description").strip()
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise ConfigError(f"{where}.description: must be at most 4096 characters")
    return Category(code=code, name=name, description=description)


def _policy(pid: str, raw: Any, where: str) -> PolicyDef:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping (base/categories/excluded_codes)")
    unknown = sorted(set(map(str, raw)) - _POLICY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(_POLICY_KEYS)}")
    has_base, has_categories = "base" in raw, "categories" in raw
    if has_base == has_categories:
        raise ConfigError(f"{where}: needs exactly one of 'base: default' and 'categories'")
    base: str | None = None
    categories: tuple[Category, ...] = ()
    if has_base:
        base = _str(raw["base"], f"{where}.base")
        if base != "default":
            raise ConfigError(f"{where}.base: only 'default' is supported, got {base!r}")
    else:
        items = raw["categories"]
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{where}.categories: must be a non-empty list")
        seen: set[str] = set()
        categories = tuple(
            _category(c, f"{where}.categories[{i}]", seen) for i, c in enumerate(items)
        )
    excluded_raw = raw.get("excluded_codes", [])
    if not isinstance(excluded_raw, list):
        raise ConfigError(f"{where}.excluded_codes: must be a list of codes")
    excluded = tuple(
        _str(code, f"{where}.excluded_codes[{i}]") for i, code in enumerate(excluded_raw)
    )
    if has_categories:
        _exclude(categories, excluded, where)  # checkable now; a base is checked at build time
    return PolicyDef(id=pid, base=base, categories=categories, excluded_codes=excluded)


def parse_policies(raw: Any, where: str = "policies") -> tuple[PolicyDef, ...]:
    """Validate the ``policies`` section's structure (ConfigError naming the key)."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping of policy id to policy")
    out = []
    for pid, body in raw.items():
        if not isinstance(pid, str) or not _ID_RE.match(pid):
            raise ConfigError(
                f"{where}: invalid policy id {pid!r} (1-64 characters of [A-Za-z0-9_.-], "
                "starting with a letter or digit)"
            )
        if pid == "default":
            raise ConfigError(f"{where}.default: 'default' is reserved for the model's taxonomy")
        out.append(_policy(pid, body, f"{where}.{pid}"))
    return tuple(out)


def _exclude(
    categories: tuple[Category, ...], excluded: tuple[str, ...], where: str
) -> tuple[Category, ...]:
    known = {c.code for c in categories}
    for i, code in enumerate(excluded):
        if code not in known:
            raise ConfigError(
                f"{where}.excluded_codes[{i}]: {code!r} is not a code of the policy "
                f"(codes: {', '.join(c.code for c in categories)})"
            )
    kept = tuple(c for c in categories if c.code not in set(excluded))
    if not kept:
        raise ConfigError(f"{where}.excluded_codes: excludes every category; keep at least one")
    return kept


def build_catalog(
    defs: tuple[PolicyDef, ...],
    default: Policy,
    *,
    check: Callable[[Policy], None] | None = None,
    where: str = "policies",
) -> PolicyCatalog:
    """The ``PolicyCatalog`` for ``defs`` on top of the model's ``default`` taxonomy.

    ``check`` is called with every resolved policy (the adapter's rendering check); a ValueError
    from it becomes a ConfigError naming the policy.
    """
    named: dict[str, Policy] = {}
    for d in defs:
        key = f"{where}.{d.id}"
        source = default.categories if d.base == "default" else d.categories
        policy = Policy(categories=_exclude(source, d.excluded_codes, key), name=d.id)
        if check is not None:
            try:
                check(policy)
            except ValueError as exc:
                raise ConfigError(f"{key}: the model cannot use this policy: {exc}") from None
        named[d.id] = policy
    return PolicyCatalog(default=default, named=named)


def read_policy_file(path: str | Path) -> tuple[PolicyDef, ...]:
    """The ``policies`` section of a config file (ConfigError when unreadable or invalid).

    The whole file is validated as at start-up (``resolve_settings``: unknown keys, every
    option's value), so a file a restart would refuse is never half-applied by a reload."""
    return resolve_settings(file_data=load_config_file(path)).policies


def describe(catalog: PolicyCatalog) -> str:
    return ", ".join(f"{pid}={p.policy_hash}" for pid, p in sorted(catalog.named.items())) or "-"


class _HasCatalog(Protocol):
    catalog: PolicyCatalog


class PolicyReloader:
    """Re-reads the config file's policies into ``guard.catalog`` (one atomic assignment).

    ``check``: the adapter's rendering check (see ``build_catalog``). ``reload()`` returns
    whether the new catalog was installed; a bad file keeps the old one and logs why.
    """

    def __init__(
        self,
        guard: _HasCatalog,
        path: str | Path,
        *,
        check: Callable[[Policy], None] | None = None,
    ) -> None:
        self._guard = guard
        self._path = Path(path)
        self._check = check
        self._fingerprint = self._read_fingerprint()
        self._lock = threading.Lock()  # SIGHUP and the file watch may overlap
        self.reloads = 0
        self.failures = 0

    def _read_fingerprint(self) -> str | None:
        try:
            return hashlib.sha256(self._path.read_bytes()).hexdigest()
        except OSError:
            return None

    def reload(self) -> bool:
        with self._lock:
            self._fingerprint = self._read_fingerprint()
            try:
                defs = read_policy_file(self._path)
                catalog = build_catalog(defs, self._guard.catalog.default, check=self._check)
            except ConfigError as exc:
                self.failures += 1
                log.error("policy reload from %s failed, keeping the old policies: %s",
                          self._path, exc)  # fmt: skip
                return False
            self._guard.catalog = catalog  # one assignment: in-flight requests keep theirs
            self.reloads += 1
            log.info("policies reloaded from %s: %s", self._path, describe(catalog))
            return True

    def changed(self) -> bool:
        """Whether the file's content differs from what was last loaded."""
        return self._read_fingerprint() != self._fingerprint

    async def watch(self, interval_s: float) -> None:
        """Poll the file every ``interval_s`` seconds and reload on a content change."""
        while True:
            await asyncio.sleep(interval_s)
            if await asyncio.to_thread(self.changed):
                await asyncio.to_thread(self.reload)
