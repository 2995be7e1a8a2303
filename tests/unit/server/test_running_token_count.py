"""The stream cadence's incremental token count: equal to a whole-text count for any split of the
text into deltas (within its rule), and a per-delta cost that does not grow with the response."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardwire.v1 import conversation_pb2 as c
from guardwire.v1 import guard_service_pb2 as g
from guardwire_server.config import RequestLimits
from guardwire_server.domain import Category, Policy
from guardwire_server.streams import RunningTokenCount, StreamSession
from guardwire_server.validation import PolicyCatalog
from tests import reference_tokenizers as ref

WORDS = st.text(
    alphabet=st.characters(
        min_codepoint=0x21, max_codepoint=0x24F, categories=("L", "N", "P", "S")
    ),
    min_size=1,
    max_size=12,
)
# mostly single spaces (the clean cuts), with other whitespace runs in between
SEPARATORS = st.sampled_from([" "] * 6 + ["  ", "\n", " \n", "\t", ", "])


@st.composite
def split_texts(draw: st.DrawFn) -> tuple[str, list[str]]:
    words = draw(st.lists(WORDS, min_size=1, max_size=60))
    text = "".join(w + draw(SEPARATORS) for w in words)
    points = sorted(draw(st.sets(st.integers(1, len(text) - 1), max_size=40)))
    bounds = [0, *points, len(text)]
    return text, [text[a:b] for a, b in itertools.pairwise(bounds)]


def words(text: str) -> int:
    return len(text.split())


def _encoder(load: Callable[[], Path]) -> Callable[[str], int]:
    from guardwire_server.adapters.tokenization import Tokenizer

    try:
        tok = Tokenizer.from_dir(load())
    except (FileNotFoundError, ImportError) as exc:
        pytest.skip(f"reference tokenizer unavailable: {exc}")
    return lambda text: len(tok.encode_text(text))


@pytest.fixture(scope="module", params=["llama2", "llama3", "words"])
def counter(request: pytest.FixtureRequest) -> Callable[[str], int]:
    if request.param == "words":
        return words
    if request.param == "llama3":
        return _encoder(ref.llama3_dir)
    return _encoder(lambda: ref.llama2_dir(ref.cached_dir(request, "tok-llama2")))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=split_texts(), window=st.sampled_from([8, 16, 128]))
def test_incremental_count_equals_whole_count_without_forced_cuts(counter, case, window):
    text, deltas = case
    running = RunningTokenCount(counter, window=window)
    for i, d in enumerate(deltas):
        value = running.add(d)
        if running.forced_cuts == 0:
            assert value == counter("".join(deltas[: i + 1]))
    if running.forced_cuts == 0:
        assert running.value == counter(text)


@given(text=st.text(alphabet="ab ", min_size=1, max_size=400), data=st.data())
def test_forced_cuts_stay_within_one_token_each_for_a_word_count(text, data):
    """Space-free runs longer than the window force cuts; the word count is then over by at most
    one per forced cut (a word split in two), never under."""
    running = RunningTokenCount(words, window=8)
    rest = text
    while rest:
        n = data.draw(st.integers(1, 12))
        running.add(rest[:n])
        rest = rest[n:]
    assert words(text) <= running.value <= words(text) + running.forced_cuts


def test_reset_starts_over():
    running = RunningTokenCount(words, window=4)
    running.add("one two three four five six ")
    running.reset()
    assert running.add("seven") == 1 and running.forced_cuts == 0


def _chars_tokenized(n_deltas: int) -> int:
    """Characters the session passes to the tokenizer for ``n_deltas`` deltas of 6 bytes, with
    every_tokens set but never due."""
    chars = 0

    def count(text: str) -> int:
        nonlocal chars
        chars += len(text)
        return len(text.split())

    limits = RequestLimits(
        max_turns=4, max_conversation_bytes=1 << 20, max_prompt_tokens=10**6, max_categories=4
    )
    catalog = PolicyCatalog(default=Policy(categories=(Category("S1", "x"),)), named={})
    s = StreamSession(catalog, limits, count)
    s.handle(g.StreamClassifyRequest(open=g.StreamOpen(cadence=g.Cadence(every_tokens=10**6))))
    s.handle(g.StreamClassifyRequest(turn=c.Turn(role=c.ROLE_USER, content="hi")))
    d = g.StreamClassifyRequest(delta=g.ResponseDelta(text="word, "))
    assert all(s.handle(d) == [] for _ in range(n_deltas))
    return chars


def test_per_delta_tokenizer_work_does_not_grow_with_the_response():
    small, large = _chars_tokenized(1000), _chars_tokenized(4000)
    assert 3.5 < large / small < 4.5  # linear; re-tokenizing the whole response would be ~16
    assert large < 4000 * 300  # a bounded tail (2 x 128 characters) plus the delta, per delta
