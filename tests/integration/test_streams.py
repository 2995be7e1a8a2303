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


async def status_before_any_write(target: str, timeout: float = 10) -> grpc.StatusCode:
    """The status of a stream the server ends at once (before reading a message), read without
    writing: a write racing the server's status fails in grpc.aio, which then replaces the
    server's status by INTERNAL "Internal error from Core" (SendMessageOperation failed)."""
    async with grpc.aio.insecure_channel(target) as ch:
        call = stub(ch).StreamClassify(timeout=timeout)
        return await call.code()


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


async def test_64_concurrent_streams_no_cross_talk(tiny_model_dir):
    from tests.conftest import run_server

    rng = random.Random(7)

    async def one(i: int):
        n_turns = rng.randint(1, 3)
        messages, expected = [open_(every=3)], 0
        for t in range(n_turns):
            messages.append(
                turn(
                    U,
                    f"stream {i} question {t} GW_TEST_UNSAFE"
                    if i % 5 == 0
                    else f"stream {i} question {t}",
                )
            )
            expected += 1
            for k in range(rng.randint(0, 6)):
                messages.append(delta(f"s{i}t{t}w{k} word word "))
            if messages[-1].WhichOneof("kind") == "delta":
                messages.append(END)
            else:
                messages.append(turn(A, f"answer {i} {t}"))
        responses = await run(srv.target, messages)
        return i, messages, responses

    # 64 streams x up to max_pending_checks outstanding checks: a queue that admits them all
    async with run_server(tiny_model_dir, backend="fake", max_queue=1024) as srv:
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
    ("messages", "rule", "kind"),
    [
        ([turn(U, "hi")], "open_first", "turn"),
        ([open_(), turn(A, "hi")], "alternate_roles", "turn"),
        ([open_(), delta("x")], "delta_needs_user_turn", "delta"),
        ([open_(), END], "end_of_turn_without_response", "end_of_turn"),
    ],
)
async def test_malformed_order_fails_with_the_rule(guard_server, messages, rule, kind):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await run(guard_server.target, messages)
    d = details(info.value)
    assert d["code"] == grpc.StatusCode.INVALID_ARGUMENT
    assert d["reason"] == "STREAM_PROTOCOL" and d["metadata"]["rule"] == rule
    assert d["fields"] == [kind]


async def test_invalid_open_is_invalid_argument(guard_server):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await run(
            guard_server.target, [msg(open=g.StreamOpen(options=g.ClassifyOptions(threshold=5.0)))]
        )
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

    async with run_server(
        tiny_model_dir, backend="fake", max_streams=1, backend_options={"delay_s": 0.2}
    ) as srv:
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
            assert await status_before_any_write(srv.target) == grpc.StatusCode.RESOURCE_EXHAUSTED
            holder.cancel()


async def test_stream_deadline_expiry(tiny_model_dir):
    from tests.conftest import run_server

    async with run_server(tiny_model_dir, backend="fake", backend_options={"delay_s": 0.5}) as srv:
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


STORY = (
    "Once upon a time a baker in a small town woke before dawn, lit the oven, and mixed flour, "
    "water and salt. The dough rested while the streets were quiet; then she shaped loaves, "
    "scored them with a razor and baked them until the crust sang as it cooled. Neighbours came "
    "early, because the first loaves were the best, and she knew each of them by name."
).split()


async def _equal_to_unary(target: str, question: str, deltas: list[str], responses) -> None:
    async with grpc.aio.insecure_channel(target) as ch:
        s = stub(ch)
        for r in responses:
            text = "".join(deltas)[: r.safe_through_offset] if r.turn_index == 1 else None
            turns = [(U, question)] + ([(A, text)] if text else [])
            unary = await s.Classify(request(*turns), timeout=30)
            assert r.result.unsafe_score == pytest.approx(unary.unsafe_score, abs=1e-4)
            assert r.result.verdict == unary.verdict


async def test_stream_checks_reuse_the_conversation_kv(guard_server):
    """Each response check computes only the text since the previous check (plus the short
    assessment suffix) on top of the cached KV of the conversation so far."""
    question = "Tell me a story about a baker, a long one please."
    deltas = [w + " " for w in STORY * 2]
    responses = await run(
        guard_server.target,
        [open_(every=16), turn(U, question), *[delta(d) for d in deltas], END],
    )
    # (the final check repeats the last partial one's text: they may share a batch, and the
    # batch's first item is charged the computed tokens)
    checks = [r for r in responses if r.turn_index == 1 and not r.final]
    assert len(checks) >= 8
    cached = [r.result.timings.cached_tokens for r in checks]
    computed = [r.result.timings.computed_tokens for r in checks]
    assert cached == sorted(cached) and cached[-1] > cached[0] + 120  # the cached KV grows
    # each check: the new text + a few margin tokens + the assessment suffix, never the
    # conversation so far (which ends up several times that)
    assert max(computed) < 100 and cached[-1] > 3 * max(computed)
    await _equal_to_unary(guard_server.target, question, deltas, responses)


async def test_stream_eviction_path_still_equals_unary(tiny_model_dir):
    """A prefix cache that holds about one conversation: concurrent streams evict each other's
    KV, checks fall back to a recompute, and every answer still equals unary Classify."""
    from tests.conftest import run_server

    async with run_server(tiny_model_dir, backend_options={"prefix_cache_bytes": 300_000}) as srv:

        async def one(i: int):
            question = f"Story number {i}, please."
            deltas = [w + " " for w in STORY[i * 5 :] + STORY[: i * 5]]
            msgs = [open_(every=16), turn(U, question), *[delta(d) for d in deltas], END]
            return question, deltas, await run(srv.target, msgs)

        results = await asyncio.gather(*[one(i) for i in range(4)])
        cache = srv.server.guard.backend.prefix_cache
        assert cache.evictions > 0 and cache.bytes <= 300_000
        for question, deltas, responses in results:
            assert sum(1 for r in responses if r.turn_index == 1) >= 4
            await _equal_to_unary(srv.target, question, deltas, responses)
