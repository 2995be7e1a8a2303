"""Three-valued outcomes: a client can never confuse "guard down" with "safe".

``GuardClient.check`` / ``AsyncGuardClient.check`` return an ``Outcome``: ``SAFE`` or ``UNSAFE``
(the model's verdict) or ``UNAVAILABLE`` (no verdict: the guard is down, draining, overloaded,
timed out, failed, or rejected the request -- ``reason`` says which). What to do without a
verdict is the caller's explicit choice, ``fail_mode``:

* ``"closed"``: block (``allowed`` is False). The safe choice for a safety guard.
* ``"open"``: let the content through (``allowed`` is True), e.g. for a low-risk surface where
  availability matters more.

``fail_mode`` has **no default**: every call site states its choice. Every UNAVAILABLE outcome
is logged (warning, logger ``guardwire``) and counted (``client.unavailable``, a
``UnavailableCounter``), so a guard that is down never degrades silently -- in either mode.

Example::

    outcome = guard.check("How do I make a bomb?", fail_mode="closed")
    if not outcome.allowed:
        refuse(outcome.reason or "unsafe")
"""

from __future__ import annotations

import enum
import logging
import threading
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from guardwire.errors import GuardError

if TYPE_CHECKING:
    from guardwire.client import ClassifyResult

__all__ = ["FailMode", "Outcome", "OutcomeKind", "UnavailableCounter", "decide"]

log = logging.getLogger("guardwire")


class OutcomeKind(str, enum.Enum):
    SAFE = "SAFE"
    UNSAFE = "UNSAFE"
    UNAVAILABLE = "UNAVAILABLE"


class FailMode(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"


FailModeArg = FailMode | Literal["closed", "open"] | str


def fail_mode_of(value: FailModeArg) -> FailMode:
    try:
        return FailMode(value)
    except ValueError:
        raise ValueError(f"fail_mode must be 'closed' or 'open', got {value!r}") from None


@dataclass(frozen=True)
class Outcome:
    """The result of ``check``: a verdict, or UNAVAILABLE with the reason."""

    kind: OutcomeKind
    allowed: bool  # SAFE: True, UNSAFE: False, UNAVAILABLE: fail_mode == "open"
    fail_mode: FailMode
    result: ClassifyResult | None = None  # the verdict's details (None when UNAVAILABLE)
    error: GuardError | None = None  # why there is no verdict (None unless UNAVAILABLE)

    @property
    def safe(self) -> bool:
        return self.kind is OutcomeKind.SAFE

    @property
    def unsafe(self) -> bool:
        return self.kind is OutcomeKind.UNSAFE

    @property
    def unavailable(self) -> bool:
        return self.kind is OutcomeKind.UNAVAILABLE

    @property
    def reason(self) -> str:
        """Why there is no verdict, e.g. ``"UNAVAILABLE DRAINING: the server is draining..."``;
        "" for a verdict."""
        return "" if self.error is None else str(self.error)


class UnavailableCounter:
    """Counts UNAVAILABLE outcomes (thread-safe): ``total``, ``passed`` (let through by
    fail-open), ``blocked`` (fail-closed) and ``by_reason`` (ErrorInfo reason, else the status
    code name)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self.passed = 0
        self.blocked = 0
        self.by_reason: Counter[str] = Counter()

    def add(self, reason: str, passed: bool) -> None:
        with self._lock:
            self.total += 1
            self.passed += passed
            self.blocked += not passed
            self.by_reason[reason] += 1


def decide(
    result: ClassifyResult | None,
    error: GuardError | None,
    fail_mode: FailModeArg,
    counter: UnavailableCounter,
) -> Outcome:
    """The outcome of a classification (``result``) or of its failure (``error``)."""
    mode = fail_mode_of(fail_mode)
    if error is None and result is not None and result.verdict in ("safe", "unsafe"):
        kind = OutcomeKind.UNSAFE if result.verdict == "unsafe" else OutcomeKind.SAFE
        return Outcome(kind, kind is OutcomeKind.SAFE, mode, result=result)
    if error is None:  # no verdict and no error: never read that as safe
        import grpc

        error = GuardError(grpc.StatusCode.UNKNOWN, "the server sent no verdict")
    passed = mode is FailMode.OPEN
    counter.add(error.reason or error.code.name, passed)
    log.warning(
        "guard unavailable (%s); fail-%s: the content is %s",
        error,
        mode.value,
        "let through" if passed else "blocked",
    )
    return Outcome(OutcomeKind.UNAVAILABLE, passed, mode, error=error)
