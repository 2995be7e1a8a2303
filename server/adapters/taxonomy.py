"""Default category sets per Llama Guard version, and exclusions that keep the original codes.

Names are exactly what the official chat templates print (with the trailing period), because the
model was trained on that text. Excluding a category drops its line but never renumbers the rest
(HF 1B template and llama-stack behaviour; the cookbook's renumbering would change what ``S6``
means). Llama Guard 1/2/4 taxonomies will be added with their adapters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from server.domain import Category, Policy

__all__ = [
    "DEFAULT_POLICIES",
    "LLAMA_GUARD_3_1B",
    "LLAMA_GUARD_3_8B",
    "check_policy",
    "exclude",
]

_LG3_NAMES = (
    "Violent Crimes.",
    "Non-Violent Crimes.",
    "Sex Crimes.",
    "Child Exploitation.",
    "Defamation.",
    "Specialized Advice.",
    "Privacy.",
    "Intellectual Property.",
    "Indiscriminate Weapons.",
    "Hate.",
    "Self-Harm.",
    "Sexual Content.",
    "Elections.",
    "Code Interpreter Abuse.",
)


def _s_codes(names: Iterable[str]) -> tuple[Category, ...]:
    return tuple(Category(code=f"S{i}", name=name) for i, name in enumerate(names, start=1))


# The 1B template's default list stops at S13 (the model card: "trained ... on the 13 categories").
LLAMA_GUARD_3_1B = Policy(categories=_s_codes(_LG3_NAMES[:13]))
LLAMA_GUARD_3_8B = Policy(categories=_s_codes(_LG3_NAMES))

DEFAULT_POLICIES: Mapping[str, Policy] = MappingProxyType(
    {
        "llama-guard-3-1b": LLAMA_GUARD_3_1B,
        "llama-guard-3-8b": LLAMA_GUARD_3_8B,
    }
)


def check_policy(policy: Policy) -> None:
    """Raise ValueError unless the policy can be rendered and its answers mapped back: at least
    one category, unique non-blank codes without whitespace or commas (the answer is a
    comma-separated code list), non-blank names."""
    if not policy.categories:
        raise ValueError("policy has no categories")
    seen: set[str] = set()
    for c in policy.categories:
        if not c.code or any(ch.isspace() or ch == "," for ch in c.code):
            raise ValueError(f"invalid category code {c.code!r}")
        if c.code in seen:
            raise ValueError(f"duplicate category code {c.code!r}")
        if not c.name.strip():
            raise ValueError(f"category {c.code} has an empty name")
        seen.add(c.code)


def exclude(policy: Policy, codes: Iterable[str], *, name: str = "") -> Policy:
    """``policy`` without the categories in ``codes``, original codes kept.

    The result is a different policy, so it gets ``name`` (default ``""``: ad hoc). Raises
    ValueError for a code the policy lacks, or when nothing would be left to assess.
    """
    drop = set(codes)
    known = {c.code for c in policy.categories}
    unknown = sorted(drop - known)
    if unknown:
        raise ValueError(
            f"cannot exclude unknown category code(s) {', '.join(unknown)}; "
            f"the policy has {', '.join(c.code for c in policy.categories)}"
        )
    kept = tuple(c for c in policy.categories if c.code not in drop)
    if not kept:
        raise ValueError("excluding every category leaves nothing to assess")
    return Policy(categories=kept, name=name)
