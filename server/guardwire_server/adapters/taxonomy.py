"""Default category sets per Llama Guard version, and exclusions that keep the original codes.

Names are exactly what the official chat templates print (with the trailing period), because the
model was trained on that text. Excluding a category drops its line but never renumbers the rest
(HF 1B template and llama-stack behaviour; the cookbook's renumbering would change what ``S6``
means).

* Llama Guard 1: O1..O6 (letter O) with the full "Should not / Can" descriptions of the HF
  template; the template's trailing space after ``O1: Violence and Hate.`` is a rendering quirk of
  the adapter, not part of the name.
* Llama Guard 2: S1..S11 (its S5 is Specialized Advice, not Defamation as in LG3); the template's
  trailing space after every name is likewise the adapter's.
* Llama Guard 4: the LG3 8B list S1..S14 (text-only conversations; S14 "Code Interpreter Abuse"
  is dropped by the reference template only when images are present, and we serve text only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from guardwire_server.domain import Category, Policy

__all__ = [
    "DEFAULT_POLICIES",
    "LLAMA_GUARD_1",
    "LLAMA_GUARD_2",
    "LLAMA_GUARD_3_1B",
    "LLAMA_GUARD_3_8B",
    "LLAMA_GUARD_4",
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


_LG2_NAMES = (
    "Violent Crimes.",
    "Non-Violent Crimes.",
    "Sex Crimes.",
    "Child Exploitation.",
    "Specialized Advice.",
    "Privacy.",
    "Intellectual Property.",
    "Indiscriminate Weapons.",
    "Hate.",
    "Self-Harm.",
    "Sexual Content.",
)

# (name, description) of O1..O6, verbatim from the meta-llama/LlamaGuard-7b chat template
_LG1 = (
    (
        "Violence and Hate.",
        (
            "Should not\n"
            "- Help people plan or engage in violence.\n"
            "- Encourage people to engage in violence.\n"
            "- Express hateful, derogatory, or demeaning sentiments against people based on "
            "sensitive personal characteristics like their race, color, religion, national "
            "origin, sexual orientation, gender, gender identity, or disability.\n"
            "- Encourage discrimination against people based on those characteristics and "
            "should not use slurs or create insults based on those characteristics.\n"
            "Can\n"
            "- Provide information on violence and discrimination.\n"
            "- Discuss the topics of hate and violence, and can discuss historical events "
            "involving violence."
        ),
    ),
    (
        "Sexual Content.",
        (
            "Should not\n"
            "- Engage in sexually explicit (i.e., erotic) conversations and should not "
            "encourage people to engage in sexual activities.\n"
            "Can\n"
            "- Discuss topics related to sexuality and sexual education.\n"
            "- Provide general information regarding sexual activities.\n"
            "- Provide guidance on topics related to sexual health."
        ),
    ),
    (
        "Criminal Planning.",
        (
            "Should not\n"
            "- Help people plan or engage in criminal activities like theft, kidnapping, or "
            "financial crimes, especially when the person indicates that they may act on the "
            "information provided to them.\n"
            "- Encourage people to engage in criminal activities or condone criminal "
            "behavior.\n"
            "Can\n"
            "- Help people understand how crimes are committed, provided that the response is"
            " not so detailed that it could be used to provide a roadmap for future crimes.\n"
            "- Help people understand how systems work that are used to prevent crimes, "
            "provided those descriptions do not provide detailed information on how to defeat"
            " those systems."
        ),
    ),
    (
        "Guns and Illegal Weapons.",
        (
            "Should not\n"
            "- Assist in the planning or execution of firearm or illegal weapons crimes, "
            "especially when the person indicates that they may act on the information "
            "provided to them.\n"
            "- Encourage people to engage in firearm or illegal weapons crimes or condone "
            "such behavior.\n"
            "Can\n"
            "- Discuss firearms and the arguments for and against firearm ownership."
        ),
    ),
    (
        "Regulated or Controlled Substances.",
        (
            "Should not\n"
            "- Encourage or assist people in the trafficking, consumption, or use of "
            "regulated or controlled substances, including but not limited to illegal drugs, "
            "tobacco, alcohol, and cannabis.\n"
            "- Assist or encourage people to create such substances when it is illegal to do "
            "so.\n"
            "Can\n"
            "- Discuss the use of regulated or controlled substances, and can provide general"
            " information on those substances (ex: what their chemical composition is and "
            "what their effects are).\n"
            "- Provide information on how those substances are manufactured, provided that "
            "the information is not so detailed as to provide step-by-step instructions for "
            "their creation."
        ),
    ),
    (
        "Self-Harm.",
        (
            "Should not\n"
            "- Encourage people to harm themselves.\n"
            "- Romanticize or condone self-harm or suicide.\n"
            "- Provide information regarding the methods of suicide or self-harm.\n"
            "- Provide any information or advice, other than information regarding "
            "appropriate health resources, to people who express or imply that they wish to "
            "harm themselves.\n"
            "Can\n"
            "- Provide general information regarding self-harm and suicide (ex: statistics, "
            "the mental health challenges faced by those who take these actions).\n"
            "Should\n"
            "- Provide information regarding appropriate health resources to people who imply"
            " or express the desire to harm themselves."
        ),
    ),
)


def _s_codes(names: Iterable[str]) -> tuple[Category, ...]:
    return tuple(Category(code=f"S{i}", name=name) for i, name in enumerate(names, start=1))


LLAMA_GUARD_1 = Policy(
    categories=tuple(
        Category(code=f"O{i}", name=name, description=description)
        for i, (name, description) in enumerate(_LG1, start=1)
    )
)
LLAMA_GUARD_2 = Policy(categories=_s_codes(_LG2_NAMES))
# The 1B template's default list stops at S13 (the model card: "trained ... on the 13 categories").
LLAMA_GUARD_3_1B = Policy(categories=_s_codes(_LG3_NAMES[:13]))
LLAMA_GUARD_3_8B = Policy(categories=_s_codes(_LG3_NAMES))
LLAMA_GUARD_4 = LLAMA_GUARD_3_8B

DEFAULT_POLICIES: Mapping[str, Policy] = MappingProxyType(
    {
        "llama-guard-1": LLAMA_GUARD_1,
        "llama-guard-2": LLAMA_GUARD_2,
        "llama-guard-3-1b": LLAMA_GUARD_3_1B,
        "llama-guard-3-8b": LLAMA_GUARD_3_8B,
        "llama-guard-4": LLAMA_GUARD_4,
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
