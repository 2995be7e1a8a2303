"""Differences between transformers releases that the backends must bridge.

transformers 5.2x renamed the decoder's ``past_key_values`` argument and output field to
``cache`` (the old name still works but warns, with removal announced). We support both:
``transformers>=4.45`` stays the requirement, so the name is chosen from the model's signature.
"""

from __future__ import annotations

import inspect
from functools import cache
from typing import Any

__all__ = ["cache_argument", "cache_kwargs", "output_cache"]


@cache
def _argument_of(forward: Any) -> str:
    params = inspect.signature(forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_argument(module: Any) -> str:
    """The name of the KV-cache argument of ``module``'s forward in this transformers release."""
    return _argument_of(type(module).forward)


def cache_kwargs(module: Any, kv_cache: Any) -> dict[str, Any]:
    """``{name: kv_cache}`` for ``module``'s forward, with the name its release expects."""
    return {cache_argument(module): kv_cache}


def output_cache(output: Any) -> Any:
    """The KV cache a forward returned (``output.cache`` or ``output.past_key_values``)."""
    if hasattr(type(output), "cache"):  # a dataclass field of the newer output classes
        return output.cache
    return output.past_key_values
