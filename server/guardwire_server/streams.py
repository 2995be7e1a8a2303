"""StreamClassify: the per-stream protocol state machine and the pipeline that answers checks.

``StreamSession`` is pure (no I/O): it takes the client's messages one by one, enforces the
protocol documented on the RPC in guard_service.proto, and returns the checks each message
makes owed. ``run_stream`` reads the request stream, starts one scoring task per owed check
(they join the micro-batcher with unary requests), and yields the answers in ``sequence`` order.

Flow control: at most ``max_pending_checks`` checks of a stream are outstanding; past that the
reader stops reading, so gRPC's own flow control pushes back on a client that sends faster than
it reads. Memory per stream is bounded by the request limits (turns, bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from guardwire.v1 import conversation_pb2, guard_service_pb2
from guardwire_server.config import RequestLimits
from guardwire_server.domain import Conversation, Policy, Role, Turn, Verdict
from guardwire_server.errors import (
    FieldViolation,
    InvalidRequest,
    LimitExceeded,
    StreamProtocolError,
)
from guardwire_server.sanitize import neutralize
from guardwire_server.validation import (
    PolicyCatalog,
    check_counts,
    validate_conversation,
    validate_policy,
    validate_threshold,
)

__all__ = ["OwedCheck", "RunningTokenCount", "StreamSession", "run_stream"]

_SENTENCE_ENDS = (".", "!", "?", "\n")


class RunningTokenCount:
    """Tokens of a text that grows by deltas, tokenizing only a bounded tail plus each delta.

    The text is a counted head and a tail. ``add`` appends to the tail and re-tokenizes the tail
    alone; once the tail passes ``2 * window`` characters, the head moves up to a *cut* that leaves
    at least ``window`` characters in the tail. So each ``add`` tokenizes at most ``2 * window``
    characters plus the delta (and, amortized, each character about ``2 * window / len(delta)``
    times), whatever the length of the text: the cost of a delta no longer grows with the text.

    The rule for exactness: the count equals ``count_tokens(whole text)`` when no token spans a
    cut. A cut is made only before a single ``" "`` that lies between two non-whitespace
    characters, and the tail is counted after that preceding character (``count(c + tail) -
    count(c)``). That is a pre-token boundary of the byte-level BPE tokenizers (Llama 3, Llama 4:
    their split regex never joins a space to the word before it) and of SentencePiece ones
    (Llama 2: no piece holds ``▁`` inside; the character of context absorbs a leading dummy
    ``▁`` where the tokenizer adds one), so for them the count is exact (tested with random
    splits). A run of more than ``window`` characters with no
    such space (a long URL, base64, text without spaces) forces a cut inside it: ``forced_cuts``
    counts them, and the count is then an estimate, typically off by a token or two per forced
    cut (either way). It only schedules checks; each check tokenizes the real prompt exactly.
    """

    def __init__(self, count_tokens: Callable[[str], int], window: int = 128) -> None:
        self._count_tokens = count_tokens
        self._window = window
        self.reset()

    def reset(self) -> None:
        """Start over with an empty text."""
        self._head = 0  # tokens of the text before the tail
        self._context = ""  # the non-space character before the tail ("" at the start)
        self._context_tokens = 0
        self._tail = ""
        self._tail_tokens = 0
        self.forced_cuts = 0

    @property
    def value(self) -> int:
        return self._head + self._tail_tokens

    def add(self, text: str) -> int:
        """Append ``text``; returns the tokens of the whole text so far."""
        self._tail += text
        self._tail_tokens = self._tokens(self._tail)
        if len(self._tail) > 2 * self._window:
            self._move_head()
        return self.value

    def _tokens(self, tail: str) -> int:
        if not self._context:
            return self._count_tokens(tail)
        return self._count_tokens(self._context + tail) - self._context_tokens

    def _move_head(self) -> None:
        # the cut leaves between window and 2 * window characters in the tail
        tail, last = self._tail, len(self._tail) - self._window
        first = max(1, last - self._window)
        cut = tail.rfind(" ", first, last + 1)
        while cut > 0 and (tail[cut - 1].isspace() or tail[cut + 1].isspace()):
            cut = tail.rfind(" ", first, cut)
        head_part = self._tokens(tail[:cut] if cut > 0 else tail[:last])
        if cut > 0:
            self._context = tail[cut - 1]
            self._context_tokens = self._count_tokens(self._context)
        else:  # no clean cut in the older part: cut at `last`, count the rest on its own
            cut, self._context, self._context_tokens = last, "", 0
            self.forced_cuts += 1
        self._head += head_part
        self._tail = tail[cut:]
        self._tail_tokens -= head_part  # exact for a clean cut; the next add recounts the tail


@dataclass(frozen=True, slots=True)
class OwedCheck:
    sequence: int
    conversation: Conversation  # ends with the assessed (possibly partial) turn
    turn_index: int
    offset_bytes: int  # UTF-8 bytes of the assessed turn's text covered by the check
    final: bool  # the assessed turn is complete
    received_at: float  # monotonic time of the message that made the check owed


@dataclass(frozen=True, slots=True)
class StreamOptions:
    policy: Policy
    threshold: float | None
    include_category_scores: bool
    every_tokens: int
    at_sentence_end: bool


class StreamSession:
    """Protocol state of one stream. ``handle`` raises ``StreamProtocolError`` (rule named),
    ``InvalidRequest`` or ``LimitExceeded``; the stream then ends with that status."""

    def __init__(
        self,
        catalog: PolicyCatalog,
        limits: RequestLimits,
        count_tokens: Callable[[str], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._catalog = catalog
        self._limits = limits
        self._clock = clock
        self.options: StreamOptions | None = None
        self.turns: list[Turn] = []
        # the assistant response being generated, as its deltas (joined only for a check), its
        # UTF-8 size and whether it has non-blank text: a delta costs the delta, not the response
        self._response: list[str] | None = None
        self._response_bytes = 0
        self._response_has_text = False
        self._unchecked = RunningTokenCount(count_tokens)  # tokens since the last check
        self._sequence = 0

    @property
    def response(self) -> str | None:
        """The assistant response being generated (None when none is open)."""
        return None if self._response is None else "".join(self._response)

    # -- message handling -------------------------------------------------------------
    def handle(self, msg: guard_service_pb2.StreamClassifyRequest) -> list[OwedCheck]:
        kind = msg.WhichOneof("kind")
        try:
            return self._dispatch(msg, kind)
        except StreamProtocolError as exc:
            exc.field = kind or "kind"
            raise

    def _dispatch(
        self, msg: guard_service_pb2.StreamClassifyRequest, kind: str | None
    ) -> list[OwedCheck]:
        if kind is None:
            raise StreamProtocolError("empty_message", "a stream message must set one kind")
        if self.options is None and kind != "open":
            raise StreamProtocolError("open_first", f"the first message must be open, got {kind}")
        if kind == "open":
            if self.options is not None:
                raise StreamProtocolError("open_once", "open may be sent only once")
            self._open(msg.open)
            return []
        if kind == "turn":
            return self._turn(msg.turn)
        if kind == "delta":
            return self._delta(msg.delta.text)
        if kind == "check":
            return self._check_now()
        return self._end_of_turn()

    def _open(self, msg: guard_service_pb2.StreamOpen) -> None:
        check_counts(msg.history, msg.policy, self._limits, "open.history")
        history, violations = validate_conversation(
            msg.history, self._limits, "open.history", allow_empty=True
        )
        policy = validate_policy(msg.policy, self._catalog, self._limits, violations)
        threshold = validate_threshold(msg.options, violations)
        if violations:
            raise InvalidRequest(
                [
                    FieldViolation(
                        v.field if v.field.startswith("open.") else f"open.{v.field}", v.description
                    )
                    for v in violations
                ]
            )
        self.turns = list(history.turns)
        self.options = StreamOptions(
            policy=policy,
            threshold=threshold,
            include_category_scores=msg.options.include_category_scores,
            every_tokens=msg.cadence.every_tokens,
            at_sentence_end=msg.cadence.at_sentence_end,
        )

    def _turn(self, msg: conversation_pb2.Turn) -> list[OwedCheck]:
        if self._response is not None:
            raise StreamProtocolError(
                "end_response_first",
                "a turn arrived while an assistant response is open; send end_of_turn first",
            )
        if msg.role not in (conversation_pb2.ROLE_USER, conversation_pb2.ROLE_ASSISTANT):
            raise InvalidRequest.one("turn.role", "must be ROLE_USER or ROLE_ASSISTANT")
        role = Role.USER if msg.role == conversation_pb2.ROLE_USER else Role.ASSISTANT
        self._require_alternation(role)
        content = msg.content.strip()
        if not content:
            raise InvalidRequest.one("turn.content", "must not be empty or blank")
        self._check_limits(extra_bytes=len(msg.content.encode("utf-8")), extra_turns=1)
        self.turns.append(Turn(role, neutralize(content)))  # guardwire_server.sanitize
        return [self._owe(len(msg.content.encode("utf-8")), final=True)]

    def _delta(self, text: str) -> list[OwedCheck]:
        if self._response is None:
            if not self.turns or self.turns[-1].role is not Role.USER:
                raise StreamProtocolError(
                    "delta_needs_user_turn",
                    "a response delta must follow a user turn (roles alternate)",
                )
            self._response, self._response_bytes, self._response_has_text = [], 0, False
            self._unchecked.reset()
        size = len(text.encode())
        self._check_limits(extra_bytes=self._response_bytes + size, extra_turns=1)
        self._response.append(text)
        self._response_bytes += size
        self._response_has_text = self._response_has_text or bool(text.strip())
        opts = self.options
        assert opts is not None
        # Tokens of the whole unchecked text, not a sum per delta (a word split over two deltas
        # is one token), counted incrementally: see RunningTokenCount for when it is exact.
        unchecked = self._unchecked.add(text) if opts.every_tokens and text else 0
        if not text or not self._response_has_text:
            return []
        due = (opts.every_tokens and unchecked >= opts.every_tokens) or (
            opts.at_sentence_end and any(end in text for end in _SENTENCE_ENDS)
        )
        return [self._owe_partial()] if due else []

    def _check_now(self) -> list[OwedCheck]:
        if self._response is not None and self._response_has_text:
            return [self._owe_partial()]
        if not self.turns:
            raise StreamProtocolError("check_before_turn", "nothing to check yet: send a turn")
        last = self.turns[-1]
        return [self._owe(len(last.content.encode()), final=True)]

    def _end_of_turn(self) -> list[OwedCheck]:
        text = self.response
        if text is None:
            raise StreamProtocolError(
                "end_of_turn_without_response", "end_of_turn needs an open response (deltas)"
            )
        self._response = None
        if not text.strip():
            raise StreamProtocolError("empty_response", "the response ended with no text")
        self.turns.append(Turn(Role.ASSISTANT, neutralize(text.strip())))
        return [self._owe(len(text.encode()), final=True)]

    # -- helpers ----------------------------------------------------------------------
    def _require_alternation(self, role: Role) -> None:
        expected = (
            Role.USER
            if not self.turns or self.turns[-1].role is Role.ASSISTANT
            else (Role.ASSISTANT)
        )
        if role is not expected:
            raise StreamProtocolError(
                "alternate_roles",
                f"roles must alternate user/assistant starting with user; expected "
                f"{expected.value}, got {role.value}",
            )

    def _check_limits(self, *, extra_bytes: int, extra_turns: int) -> None:
        turns = len(self.turns) + extra_turns
        if turns > self._limits.max_turns:
            raise LimitExceeded("turn", "max_turns", self._limits.max_turns, turns)
        total = sum(len(t.content.encode()) for t in self.turns) + extra_bytes
        if total > self._limits.max_conversation_bytes:
            raise LimitExceeded(
                "turn", "max_conversation_bytes", self._limits.max_conversation_bytes, total
            )

    def _owe(self, offset_bytes: int, *, final: bool) -> OwedCheck:
        self._sequence += 1
        return OwedCheck(
            sequence=self._sequence,
            conversation=Conversation(tuple(self.turns)),
            turn_index=len(self.turns) - 1,
            offset_bytes=offset_bytes,
            final=final,
            received_at=self._clock(),
        )

    def _owe_partial(self) -> OwedCheck:
        response = self.response
        assert response is not None
        self._unchecked.reset()
        self._sequence += 1
        partial = Turn(Role.ASSISTANT, neutralize(response.strip()))
        return OwedCheck(
            sequence=self._sequence,
            conversation=Conversation((*self.turns, partial)),
            turn_index=len(self.turns),
            offset_bytes=self._response_bytes,
            final=False,
            received_at=self._clock(),
        )


ScoreFn = Callable[[OwedCheck, StreamOptions], Awaitable[Verdict]]
RenderFn = Callable[[OwedCheck, Verdict, StreamOptions], guard_service_pb2.StreamClassifyResponse]

_DONE = object()


async def run_stream(
    requests: AsyncIterator[guard_service_pb2.StreamClassifyRequest],
    session: StreamSession,
    score: ScoreFn,
    render: RenderFn,
    *,
    max_pending_checks: int = 8,
) -> AsyncIterator[guard_service_pb2.StreamClassifyResponse]:
    """Yields one response per owed check, in order. Raises the first error (protocol,
    validation or scoring); outstanding checks are cancelled when the stream ends."""
    pending: asyncio.Queue[object] = asyncio.Queue(maxsize=max_pending_checks)
    tasks: set[asyncio.Task[Verdict]] = set()

    async def reader() -> None:
        try:
            async for msg in requests:
                for check in session.handle(msg):
                    assert session.options is not None
                    task = asyncio.create_task(score(check, session.options))
                    tasks.add(task)
                    await pending.put((check, task))
            await pending.put(_DONE)
        except Exception as exc:  # handed to the writer, which ends the stream with it
            await pending.put(exc)

    reader_task = asyncio.create_task(reader())
    try:
        while True:
            item = await pending.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            check, task = item  # type: ignore[misc]
            verdict = await task
            tasks.discard(task)
            assert session.options is not None
            yield render(check, verdict, session.options)
    finally:
        reader_task.cancel()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader_task
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
