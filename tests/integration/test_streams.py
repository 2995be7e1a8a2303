"""StreamClassify over a real socket: ordering, equivalence with Classify, concurrency,
protocol errors, cancellation, deadlines and the Python stream client."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest

from guardwire.v1 import conversation_pb2 as c
from guardwire.v1 import guard_service_pb2 as g
from tests.integration.helpers import A, U, details, request, stub


def msg(**kind) -> g.StreamClassifyRequest:
    return g.StreamClassifyRequest(**kind)


def open_(every: int = 0, **kw) -> g.StreamClassifyRequest:
    return msg(open=g.StreamOpen(cadence=g.Cadence(every_tokens=every), **kw))


def turn(role: int, text: str) -> g.StreamClassifyRequest:
    return msg(turn=c.Turn(role=role, content=text))


def delta(text: str) -> g.StreamClassifyRequest:
    return msg(delta=g.ResponseDelta(text=text))


END = msg(end_of_turn=g.EndOfTurn())


async def run(target: str, messages, timeout=60):
    async def gen():
        for m in messages:
            yield m

    async with grpc.aio.insecure_channel(target) as ch:
        return [r async for r in stub(ch).StreamClassify(gen(), timeout=timeout)]


async def test_stream_checks_equal_unary_classify(guard_server):
    words = "Sure, here is a recipe. Mix flour and water, then knead the dough well.".split()
    deltas = [w + " " for w in words]
    responses = await run(
        guard_server.target,
        [open_(every=4), turn(U, "How do I make bread?"), *[delta(d) for d in deltas], END],
    )
    assert [r.sequence for r in responses] == list(range(1, len(responses) + 1))
    assert responses[0].final and responses[0].turn_index == 0
    assert responses[-1].final and responses[-1].turn_index == 1
    partials = [r for r in responses if not r.final]
    assert partials, "cadence every 4 tokens must owe partial checks"
    async with grpc.aio.insecure_channel(guard_server.target) as ch:
        s = stub(ch)
        for r in responses:
            text = "".join(deltas)[: r.safe_through_offset] if r.turn_index == 1 else None
            turns = [(U, "How do I make bread?")] + ([(A, text)] if text else [])
            unary = await s.Classify(request(*turns), timeout=30)
            assert r.result.unsafe_score == pytest.approx(unary.unsafe_score, abs=1e-4)
            assert r.result.verdict == unary.verdict
            assert r.result.assessed_role == unary.assessed_role


async def test_64_concurrent_streams_no_cross_talk(fake_server):
    rng = random.Random(7)

    async def one(i: int):
        n_turns = rng.randint(1, 3)
        messages, expected = [open_(every=3)], 0
        for t in range(n_turns):
            messages.append(turn(U, f"stream {i} question {t} GW_TEST_UNSAFE" if i % 5 == 0
                                 else f"stream {i} question {t}"))
            expected += 1
            for k in range(rng.randint(0, 6)):
                messages.append(delta(f"s{i}t{t}w{k} word word "))
            if messages[-1].WhichOneof("kind") == "delta":
                messages.append(END)
            else:
                messages.append(turn(A, f"answer {i} {t}"))
        responses = await run(fake_server.target, messages)
        return i, messages, responses

    results = await asyncio.gather(*[one(i) for i in range(64)])
    for i, messages, responses in results:
        assert [r.sequence for r in responses] == list(range(1, len(responses) + 1))
        finals = [r for r in responses if r.final]
        n_turn_checks = sum(1 for m in messages if m.WhichOneof("kind") in ("turn", "end_of_turn"))
        assert len(finals) == n_turn_checks
        user_finals = [r for r in finals if r.turn_index % 2 == 0]
        if i % 5 == 0:  # only this stream's own text decides its verdict
            assert all(r.result.unsafe_score > 0.99 for r in user_finals)
        else:
            assert all(r.result.unsafe_score < 0.99 for r in user_finals)


@pytest.mark.parametrize(
    ("messages", "rule"),
    [
        ([turn(U, "hi")], "open_first"),
        ([open_(), turn(A, "hi")], "alternate_roles"),
        ([open_(), delta("x")], "delta_needs_user_turn"),
        ([open_(), END], "end_of_turn_without_response"),
    ],
)
async def test_malformed_order_fails_with_the_rule(guard_server, messages, rule):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await run(guard_server.target, messages)
    d = details(info.value)
    assert d["code"] == grpc.StatusCode.FAILED_PRECONDITION
    assert d["reason"] == "STREAM_PROTOCOL" and d["metadata"]["rule"] == rule


async def test_invalid_open_is_invalid_argument(guard_server):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await run(guard_server.target, [msg(open=g.StreamOpen(
            options=g.ClassifyOptions(threshold=5.0)))])
    d = details(info.value)
    assert d["code"] == grpc.StatusCode.INVALID_ARGUMENT
    assert "open.options.threshold" in d["fields"]


async def test_answers_owed_before_an_error_are_delivered_first(guard_server):
    async def gen():
        yield open_()
        yield turn(U, "first question")
        yield turn(U, "second user turn breaks alternation")

    got = []
    async with grpc.aio.insecure_channel(guard_server.target) as ch:
        call = stub(ch).StreamClassify(gen(), timeout=30)
        with pytest.raises(grpc.aio.AioRpcError):
            async for r in call:
                got.append(r)
    assert [r.sequence for r in got] == [1]


async def test_cancellation_mid_stream_frees_the_stream(tiny_model_dir):
    from tests.conftest import run_server

    async with run_server(tiny_model_dir, backend="fake", max_streams=1,
                          backend_options={"delay_s": 0.2}) as srv:
        async with grpc.aio.insecure_channel(srv.target) as ch:
            s = stub(ch)
            queue: asyncio.Queue = asyncio.Queue()

            async def gen():
                while (m := await queue.get()) is not None:
                    yield m

            call = s.StreamClassify(gen(), timeout=30)
            await queue.put(open_())
            await queue.put(turn(U, "hello"))
            first = await call.read()
            assert first.sequence == 1
            await queue.put(msg(check=g.CheckNow()))
            call.cancel()
            await asyncio.sleep(0.3)
            # the slot is free again: a new stream is accepted (max_streams=1)
            again = await run(srv.target, [open_(), turn(U, "again")])
            assert len(again) == 1
            # and a second concurrent stream is rejected fast while one is open
            queue2: asyncio.Queue = asyncio.Queue()

            async def gen2():
                while (m := await queue2.get()) is not None:
                    yield m

            holder = s.StreamClassify(gen2(), timeout=30)
            await queue2.put(open_())
            await queue2.put(turn(U, "hold"))
            await holder.read()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await run(srv.target, [open_(), turn(U, "rejected")])
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            holder.cancel()


async def test_stream_deadline_expiry(tiny_model_dir):
    from tests.conftest import run_server

    async with run_server(tiny_model_dir, backend="fake",
                          backend_options={"delay_s": 0.5}) as srv:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await run(srv.target, [open_(), turn(U, "slow")], timeout=0.2)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_python_stream_client_and_generation_guard(fake_server):
    from guardwire import AsyncGuardClient
    from guardwire.streaming import GenerationBlocked, guard_generation

    async def tokens(words):
        for w in words:
            yield w
            await asyncio.sleep(0)

    async with AsyncGuardClient(fake_server.target) as client:
        async with client.stream(every_tokens=2, threshold=0.9999) as st:
            await st.send_turn("user", "tell me a story")
            first = await st.next_verdict()
            assert first.final and first.result.verdict in ("safe", "unsafe")
            out = [t async for t in guard_generation(st, tokens(["Once ", "upon ", "a time."]))]
            assert out == ["Once ", "upon ", "a time."]
        async with client.stream(every_tokens=1, threshold=0.9999) as st:
            await st.send_turn("user", "tell me a story")
            await st.next_verdict()
            seen = []
            with pytest.raises(GenerationBlocked) as info:
                async for t in guard_generation(
                    st, tokens(["fine ", "text ", "GW_TEST_UNSAFE ", "more ", "and ", "more "] * 5)
                ):
                    seen.append(t)
            assert info.value.verdict.result.unsafe
            assert len(seen) < 30  # generation stopped early
