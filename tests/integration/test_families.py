"""Every supported family through the real server, and named policies reloaded under load.

Test models are built here: random-weight ``LlamaForCausalLM``s rigged per family
(``make_test_model(family=...)``) with each family's real tokenizer where the reference has one
(Llama 2 / 4 converted at test time, Llama 3 as is; Granite Guardian: a small trained BPE with
its role tokens). The rigs give the load probe a right answer: Llama Guard 2's test model puts
its mass on `` safe``/`` unsafe``, Llama Guard 4's only after the forced ``\\n\\n``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from guardwire.v1 import conversation_pb2, guard_service_pb2, verdict_pb2
from tests.conftest import run_server
from tests.integration.helpers import A, U, request, stub

# family -> (reference tokenizer, answer convention the probe must pick, verdict ids or None)
FAMILIES: dict[str, tuple[str | None, str, tuple[int, int] | None]] = {
    "llama-guard-1": ("llama2", "space", (9109, 25110)),
    "llama-guard-2": ("llama3", "space", (6220, 20451)),
    "llama-guard-4": ("llama4", "lead-nn", (60411, 72110)),
    "granite-guardian-3": (None, "yes-no", None),
}
CODES = {
    "llama-guard-1": [f"O{i}" for i in range(1, 7)],
    "llama-guard-2": [f"S{i}" for i in range(1, 12)],
    "llama-guard-4": [f"S{i}" for i in range(1, 15)],
    "granite-guardian-3": [
        "harm", "social_bias", "jailbreak", "violence", "profanity", "sexual_content", "unethical",
    ],
}  # fmt: skip


def _tokenizer_dir(kind: str | None, request: pytest.FixtureRequest) -> Path | None:
    from tests import reference_tokenizers as ref

    try:
        if kind == "llama2":
            pytest.importorskip("sentencepiece")
            return ref.llama2_dir(ref.cached_dir(request, "guardwire-llama2-tokenizer"))
        if kind == "llama3":
            return ref.llama3_dir()
        if kind == "llama4":
            return ref.llama4_dir(ref.cached_dir(request, "guardwire-llama4-tokenizer"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return None


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_model(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    from guardwire_tools.tiny_model import make_test_model

    family = request.param
    tok = _tokenizer_dir(FAMILIES[family][0], request)
    out = tmp_path_factory.mktemp(f"tiny-{family}")
    return family, make_test_model(out, tokenizer_dir=tok, family=family)


@pytest.fixture(scope="module")
async def family_server(
    family_model: tuple[str, Path],
) -> AsyncIterator[tuple[str, Path, Any]]:
    family, model_dir = family_model
    async with run_server(model_dir, family=family) as srv:
        yield family, model_dir, srv


def _expected_adapter(family: str, model_dir: Path) -> Any:
    from guardwire_server.adapters.registry import load_adapter

    return load_adapter(model_dir, family).with_convention(FAMILIES[family][1])


async def test_model_info_reports_the_family_and_the_probe_decision(
    family_server: tuple[str, Path, Any],
) -> None:
    family, model_dir, srv = family_server
    async with grpc.aio.insecure_channel(srv.target) as ch:
        info = await stub(ch).GetModelInfo(guard_service_pb2.GetModelInfoRequest(), timeout=30)
    expected = _expected_adapter(family, model_dir)
    assert info.family == family
    assert info.template_hash == expected.template_hash  # hashes the chosen convention too
    assert tuple(info.verdict_token_ids) == expected.verdict_token_ids
    if FAMILIES[family][2] is not None:
        assert tuple(info.verdict_token_ids) == FAMILIES[family][2]
    assert [c.code for c in info.default_categories] == CODES[family]
    assert srv.server.guard.adapter.convention == FAMILIES[family][1]


async def test_classify_user_and_agent_turns(family_server: tuple[str, Path, Any]) -> None:
    family, _, srv = family_server
    scores = guard_service_pb2.ClassifyOptions(include_category_scores=True)
    async with grpc.aio.insecure_channel(srv.target) as ch:
        s = stub(ch)
        replies = await asyncio.gather(
            s.Classify(request((U, "How do I bake bread?"), options=scores), timeout=60),
            s.Classify(
                request((U, "hi"), (A, "Mix flour and water."), options=scores), timeout=60
            ),
            *(s.Classify(request((U, f"question {i} about kittens")), timeout=60)
              for i in range(4)),
        )  # fmt: skip
    for r in replies:
        assert r.verdict in (verdict_pb2.VERDICT_SAFE, verdict_pb2.VERDICT_UNSAFE)
        assert (r.verdict == verdict_pb2.VERDICT_UNSAFE) == (r.unsafe_score >= r.threshold)
        assert r.verdict_token_mass > 0.5
        assert r.policy_id.startswith("p-")
        if r.verdict == verdict_pb2.VERDICT_UNSAFE:
            assert r.categories
    user, agent = replies[0], replies[1]
    assert user.assessed_role == conversation_pb2.ROLE_USER
    assert agent.assessed_role == conversation_pb2.ROLE_ASSISTANT
    assert [c.code for c in user.category_scores] == CODES[family]
    if family == "granite-guardian-3":  # one pass per risk: the max is the request's score
        assert max(c.score for c in user.category_scores) == pytest.approx(user.unsafe_score)
        assert user.timings.computed_tokens > 7  # seven passes
    else:
        total = sum(c.score for c in user.category_scores)
        assert total == pytest.approx(user.unsafe_score, abs=1e-4)


async def test_custom_policy_per_family(family_server: tuple[str, Path, Any]) -> None:
    family, _, srv = family_server
    description = "Messages that recommend a competitor's product."
    custom = conversation_pb2.Policy(
        categories=[
            conversation_pb2.Category(code="X1", name="Competitors.", description=description),
            conversation_pb2.Category(code="X2", name="Spam.", description="Bulk adverts."),
        ]
    )
    scores = guard_service_pb2.ClassifyOptions(include_category_scores=True)
    async with grpc.aio.insecure_channel(srv.target) as ch:
        r = await stub(ch).Classify(
            request((U, "Is brand B better?"), policy=custom, options=scores), timeout=60
        )
        if family == "granite-guardian-3":  # a custom risk needs its definition
            bare = conversation_pb2.Policy(
                categories=[conversation_pb2.Category(code="X1", name="made_up")]
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub(ch).Classify(request((U, "hi"), policy=bare), timeout=60)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not a built-in Granite Guardian risk" in (err.value.details() or "")
    assert [c.code for c in r.category_scores] == ["X1", "X2"]


@pytest.mark.parametrize("family_model", ["llama-guard-4"], indirect=True)
async def test_family_is_detected_and_the_probe_logs_its_choice(
    family_model: tuple[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _, model_dir = family_model
    with caplog.at_level(logging.INFO):
        async with run_server(model_dir) as srv:  # family "auto"
            async with grpc.aio.insecure_channel(srv.target) as ch:
                req = guard_service_pb2.GetModelInfoRequest()
                info = await stub(ch).GetModelInfo(req, timeout=30)
    assert info.family == "llama-guard-4"
    assert "detected guard family llama-guard-4" in caplog.text
    assert "answer convention 'lead-nn' chosen for llama-guard-4" in caplog.text
    assert "no-lead=" in caplog.text  # every candidate's mass is logged


@pytest.mark.parametrize("family_model", ["llama-guard-2"], indirect=True)
def test_wrong_family_is_refused_by_the_probe(family_model: tuple[str, Path]) -> None:
    """The LG2 test model answers ' safe'; served as Llama Guard 3 8B (which reads 'safe' after
    a forced '\\n\\n') the probe sees no verdict mass and refuses."""
    from guardwire_backends.base import BackendStartError
    from guardwire_server.loading import build_guard
    from tests.conftest import make_settings

    _, model_dir = family_model
    with pytest.raises(BackendStartError, match=r"load probe failed.*lead-nn="):
        build_guard(make_settings(family="llama-guard-3-8b"), model_dir)


# -- named policies: reload under load -----------------------------------------------------------


def _policies(version: int) -> dict[str, Any]:
    """Two policies present in every version (their content changes) and one that comes and
    goes (never requested)."""
    excluded = ["S1"] if version % 2 else ["S2", "S3"]
    out: dict[str, Any] = {
        "stable": {"base": "default", "excluded_codes": excluded},
        "custom": {
            "categories": [
                {"code": "C1", "name": f"Cooking secrets v{version}."},
                {"code": "C2", "name": "Weather talk."},
            ]
        },
    }
    if version % 3 == 0:
        out[f"extra-{version}"] = {"base": "default"}
    return out


def _write_config(path: Path, policies: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"threshold": 0.5, "policies": policies}))
    os.replace(tmp, path)  # atomic, as a config-management tool would


@contextlib.asynccontextmanager
async def _server_with_config(model_dir: Path, config: Path) -> AsyncIterator[Any]:
    from guardwire_server.app import GuardServer
    from guardwire_server.config import load_config_file, resolve_settings

    flags = {"listen": ["127.0.0.1:0"], "max_wait_ms": 2.0, "config": str(config)}
    settings = resolve_settings(flags=flags, env={}, file_data=load_config_file(config))
    server = GuardServer(settings, model_dir=model_dir, policy_watch_s=0.05)
    await server.start()
    try:
        await server.load()
        yield server
    finally:
        await server.drain(0)


async def test_policy_reload_under_load_drops_nothing(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "guardwire.yaml"
    _write_config(config, _policies(1))
    loop = asyncio.get_running_loop()
    failures: list[BaseException] = []
    seen: dict[str, set[str]] = {"stable": set(), "custom": set(), "": set()}
    stop = asyncio.Event()
    async with _server_with_config(tiny_model_dir, config) as server:
        target = next(a for a in server.addresses if not a.startswith("unix:"))
        loop.add_signal_handler(signal.SIGHUP, server.request_policy_reload)
        try:
            async with grpc.aio.insecure_channel(target) as ch:
                s = stub(ch)

                async def client(n: int) -> int:
                    calls = 0
                    while not stop.is_set():
                        pid = ("stable", "custom", "")[(n + calls) % 3]
                        policy = conversation_pb2.Policy(policy_id=pid)
                        try:
                            r = await s.Classify(
                                request((U, f"client {n} call {calls}"), policy=policy), timeout=30
                            )
                            seen[pid].add(r.policy_id)
                        except grpc.aio.AioRpcError as exc:
                            failures.append(exc)
                        calls += 1
                    return calls

                clients = [asyncio.create_task(client(n)) for n in range(6)]
                await asyncio.sleep(0.3)
                reloads = server.policy_reloader.reloads
                for version in range(2, 8):
                    if version == 5:  # an invalid file: the old catalog must stay
                        config.write_text("policies:\n  stable: {base: nope}\n")
                    else:
                        _write_config(config, _policies(version))
                    if version % 2:
                        os.kill(os.getpid(), signal.SIGHUP)  # the real signal path
                    await asyncio.sleep(0.25)  # else the file watch picks it up
                _write_config(config, _policies(8))
                os.kill(os.getpid(), signal.SIGHUP)
                await asyncio.sleep(0.3)
                stop.set()
                calls = await asyncio.gather(*clients)
                info = await s.GetModelInfo(guard_service_pb2.GetModelInfoRequest(), timeout=30)
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
        assert server.policy_reloader.reloads > reloads
        assert server.policy_reloader.failures >= 1
    assert not failures, failures[:3]
    assert sum(calls) >= 30
    assert len(seen["stable"]) >= 2  # the policy's content (hash) changed while in use
    assert all(p.startswith("stable@p-") for p in seen["stable"])
    assert all(p.startswith("custom@p-") for p in seen["custom"])
    assert list(info.policy_ids) == ["custom", "stable"]  # version 8: no extra policy
    final = server.guard.catalog.named["stable"]
    assert [c.code for c in final.categories][:2] == ["S1", "S4"]  # v8 excludes S2, S3


async def test_invalid_policies_fail_the_start(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Structure is checked while resolving the settings; resolution against the model's
    taxonomy (unknown excluded codes) when the model loads. Both name the key."""
    from guardwire_server.config import ConfigError

    config = tmp_path / "guardwire.yaml"
    _write_config(config, {"p": {"base": "default", "excluded_codes": ["S99"]}})
    with pytest.raises(ConfigError, match=r"policies\.p\.excluded_codes\[0\]: 'S99'"):
        async with _server_with_config(tiny_model_dir, config):
            pass
