"""The StreamClassify protocol state machine, message by message (no I/O)."""

from __future__ import annotations

import pytest

from guardwire.v1 import conversation_pb2 as c
from guardwire.v1 import guard_service_pb2 as g
from guardwire_server.config import RequestLimits
from guardwire_server.domain import Category, Policy, Role
from guardwire_server.errors import InvalidRequest, LimitExceeded, StreamProtocolError
from guardwire_server.streams import StreamSession
from guardwire_server.validation import PolicyCatalog

DEFAULT = Policy(categories=(Category("S1", "Violent Crimes."), Category("S2", "Other.")))
LIMITS = RequestLimits(
    max_turns=6, max_conversation_bytes=200, max_prompt_tokens=1000, max_categories=4
)


def session() -> StreamSession:
    return StreamSession(
        PolicyCatalog(default=DEFAULT, named={}),
        LIMITS,
        count_tokens=lambda t: len(t.split()),
        clock=lambda: 1.0,
    )


def open_(every: int = 0, sentence: bool = False, **kw) -> g.StreamClassifyRequest:
    return g.StreamClassifyRequest(
        open=g.StreamOpen(cadence=g.Cadence(every_tokens=every, at_sentence_end=sentence), **kw)
    )


def turn(role: int, text: str) -> g.StreamClassifyRequest:
    return g.StreamClassifyRequest(turn=c.Turn(role=role, content=text))


def delta(text: str) -> g.StreamClassifyRequest:
    return g.StreamClassifyRequest(delta=g.ResponseDelta(text=text))


CHECK = g.StreamClassifyRequest(check=g.CheckNow())
END = g.StreamClassifyRequest(end_of_turn=g.EndOfTurn())


def rule_of(exc: pytest.ExceptionInfo[StreamProtocolError]) -> str:
    return exc.value.rule


def test_user_turn_owes_a_final_check_and_deltas_follow_cadence():
    s = session()
    assert s.handle(open_(every=3)) == []
    [first] = s.handle(turn(c.ROLE_USER, " hello there "))
    assert first.sequence == 1 and first.final and first.turn_index == 0
    assert first.conversation.turns[-1].content == "hello there"
    assert s.handle(delta("one two")) == []
    [partial] = s.handle(delta(" three four"))
    assert partial.sequence == 2 and not partial.final and partial.turn_index == 1
    assert partial.conversation.turns[-1].role is Role.ASSISTANT
    assert partial.conversation.turns[-1].content == "one two three four"
    assert partial.offset_bytes == len("one two three four")
    [done] = s.handle(END)
    assert done.final and done.sequence == 3 and len(done.conversation.turns) == 2


def test_sentence_end_cadence_and_blank_deltas():
    s = session()
    s.handle(open_(sentence=True))
    s.handle(turn(c.ROLE_USER, "q"))
    assert s.handle(delta("   ")) == []  # nothing to assess yet
    assert s.handle(delta("Hi")) == []
    assert len(s.handle(delta(" there."))) == 1


def test_check_now_on_partial_and_on_complete_turn():
    s = session()
    s.handle(open_())
    s.handle(turn(c.ROLE_USER, "q"))
    [again] = s.handle(CHECK)
    assert again.final and again.turn_index == 0
    s.handle(delta("partial answer"))
    [p] = s.handle(CHECK)
    assert not p.final and p.turn_index == 1


def test_history_is_context_not_checked():
    s = session()
    hist = c.Conversation(
        turns=[c.Turn(role=c.ROLE_USER, content="a"), c.Turn(role=c.ROLE_ASSISTANT, content="b")]
    )
    assert s.handle(open_(history=hist)) == []
    [chk] = s.handle(turn(c.ROLE_USER, "c"))
    assert [t.content for t in chk.conversation.turns] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("messages", "rule"),
    [
        ([turn(c.ROLE_USER, "x")], "open_first"),
        ([open_(), open_()], "open_once"),
        ([open_(), g.StreamClassifyRequest()], "empty_message"),
        ([open_(), turn(c.ROLE_ASSISTANT, "x")], "alternate_roles"),
        ([open_(), turn(c.ROLE_USER, "x"), turn(c.ROLE_USER, "y")], "alternate_roles"),
        ([open_(), delta("x")], "delta_needs_user_turn"),
        (
            [open_(), turn(c.ROLE_USER, "x"), turn(c.ROLE_ASSISTANT, "y"), delta("z")],
            "delta_needs_user_turn",
        ),
        (
            [open_(), turn(c.ROLE_USER, "x"), delta("y"), turn(c.ROLE_USER, "z")],
            "end_response_first",
        ),
        ([open_(), END], "end_of_turn_without_response"),
        ([open_(), turn(c.ROLE_USER, "x"), delta("  "), END], "empty_response"),
        ([open_(), CHECK], "check_before_turn"),
    ],
)
def test_protocol_violations_name_the_rule(messages, rule):
    s = session()
    with pytest.raises(StreamProtocolError) as info:
        for m in messages:
            s.handle(m)
    assert rule_of(info) == rule


def test_invalid_open_and_turns_are_invalid_argument_naming_the_field():
    with pytest.raises(InvalidRequest) as info:
        session().handle(open_(options=g.ClassifyOptions(threshold=2.0)))
    assert info.value.violations[0].field == "open.options.threshold"
    s = session()
    s.handle(open_())
    with pytest.raises(InvalidRequest) as info:
        s.handle(turn(c.ROLE_USER, "   "))
    assert info.value.violations[0].field == "turn.content"
    with pytest.raises(InvalidRequest):
        s.handle(turn(c.ROLE_SYSTEM, "x"))


def test_limits_bound_the_stream_memory():
    s = session()
    s.handle(open_())
    s.handle(turn(c.ROLE_USER, "q"))
    with pytest.raises(LimitExceeded):
        for _ in range(100):
            s.handle(delta("x" * 10))
