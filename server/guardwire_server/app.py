"""The sidecar process: gRPC server, health, reflection, model loading, drain.

Lifecycle: ``start()`` binds every listen address and answers health NOT_SERVING at once (so a
Kubernetes startup probe sees the process), ``load()`` loads, probes and warms the model in a
worker thread and flips health to SERVING, ``drain()`` flips health back to NOT_SERVING, refuses
new calls and lets in-flight calls finish within the grace period. SIGHUP (and a change of the
config file's content, polled every ``POLICY_WATCH_S``) reloads the named policies without
dropping requests (``guardwire_server.policies``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from guardwire.v1 import error_reason_pb2, guard_service_pb2, guard_service_pb2_grpc
from guardwire_server.config import ConfigError, Settings
from guardwire_server.guard import Guard
from guardwire_server.health_monitor import HealthMonitor
from guardwire_server.interceptors import (
    MESSAGE_SLACK_BYTES,
    BearerTokenInterceptor,
    MalformedRequestInterceptor,
)
from guardwire_server.loading import build_guard, policy_check, resolve_model_dir
from guardwire_server.policies import PolicyReloader
from guardwire_server.servicer import GuardServicer
from guardwire_server.telemetry import build_telemetry
from guardwire_server.transport import bind, read_token, server_credentials

__all__ = ["GuardServer", "serve"]

QUIET_WAIT_FACTOR = 10  # the drain waits at most 10x drain_quiet_s for callers to go quiet

log = logging.getLogger(__name__)
SERVICE_NAME = guard_service_pb2.DESCRIPTOR.services_by_name["GuardService"].full_name
_HEALTH_NAMES = ("", SERVICE_NAME)
# Files reflection must serve beside the services' own: the types a client needs to decode
# error details (guardwire.v1.ErrorReason, google.rpc.ErrorInfo/BadRequest/RetryInfo). The
# reflection service answers from the default descriptor pool, which holds what is imported.
REFLECTED_FILES = (error_reason_pb2.DESCRIPTOR, error_details_pb2.DESCRIPTOR)
POLICY_WATCH_S = 5.0  # how often the config file is checked for changed policies


class GuardServer:
    def __init__(
        self,
        settings: Settings,
        *,
        model_dir: Path | None = None,
        backend_options: dict[str, Any] | None = None,
        policy_watch_s: float = POLICY_WATCH_S,
    ) -> None:
        self.settings = settings
        # named policies: reloaded from settings.config_file on SIGHUP and when it changes
        self.policy_reloader: PolicyReloader | None = None
        self._policy_watch_s = policy_watch_s  # 0: SIGHUP only
        self._background: set[asyncio.Task[Any]] = set()
        self.model_dir = model_dir
        self.backend_options = dict(backend_options or {})  # extra backend knobs (tests, bench)
        self.guard: Guard | None = None
        self.draining = False
        self.addresses: list[str] = []
        self.in_flight = 0  # RPCs being handled (the servicer counts them)
        self._last_call_at = 0.0  # time.monotonic() of the last call_started
        self._idle = asyncio.Event()
        self._idle.set()
        self.drain_event = asyncio.Event()  # set on drain: open streams answer and end
        self.health_monitor: HealthMonitor | None = None  # backend health, once loaded
        self._health = health.aio.HealthServicer()
        self.telemetry = build_telemetry(settings)  # no-op unless otel_enabled
        # transport security (guardwire_server.transport): read once; a bad file is a ConfigError
        self._credentials = server_credentials(settings)
        token = read_token(settings)
        interceptors = [*self.telemetry.server_interceptors()]
        if token is not None:
            interceptors.append(BearerTokenInterceptor(token))
        max_msg = settings.max_message_bytes
        interceptors.append(MalformedRequestInterceptor(max_message_bytes=max_msg))
        max_rpcs = (
            settings.max_concurrent_rpcs or 2 * (settings.max_queue + settings.max_streams) + 64
        )
        self._server = grpc.aio.server(
            interceptors=interceptors,
            maximum_concurrent_rpcs=max_rpcs,
            options=[
                # gRPC core lets a little more through than max_message_bytes, so that the
                # interceptor answers a message just over the limit with LIMIT_EXCEEDED; past
                # the slack gRPC itself answers RESOURCE_EXHAUSTED (no ErrorInfo)
                ("grpc.max_receive_message_length", max_msg + MESSAGE_SLACK_BYTES),
                ("grpc.max_send_message_length", max_msg),
                # gRPC sets SO_REUSEPORT by default: a second server on the same port would
                # silently share it (and half the calls) instead of failing to start
                ("grpc.so_reuseport", 0),
            ],
        )
        guard_service_pb2_grpc.add_GuardServiceServicer_to_server(
            GuardServicer(self, settings, self.telemetry), self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        if settings.reflection:
            reflection.enable_server_reflection(
                (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
            )

    async def _set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in _HEALTH_NAMES:
            await self._health.set(name, status)

    async def start(self) -> None:
        unix_mode = int(self.settings.unix_socket_mode, 8)
        for addr in self.settings.listen:
            port = bind(self._server, addr, self._credentials, unix_mode=unix_mode)
            if addr.startswith("unix:"):
                self.addresses.append(addr)
            else:
                host = addr.rsplit(":", 1)[0]
                self.addresses.append(f"{host}:{port}")
        await self._set_health(False)
        await self._server.start()
        self.telemetry.start()
        log.info("listening on %s (health NOT_SERVING until the model is ready)", self.addresses)

    async def load(self) -> None:
        model_dir = self.model_dir or await asyncio.to_thread(
            resolve_model_dir, self.settings.model, self.settings.revision
        )
        guard = await asyncio.to_thread(
            build_guard, self.settings, model_dir, backend_options=self.backend_options
        )
        self.telemetry.instrument(guard)
        monitor = HealthMonitor(
            unhealthy_after=self.settings.unhealthy_after_failures,
            probe_interval_s=self.settings.recovery_probe_s,
            on_change=self._backend_health_changed,
        )
        monitor.attach(guard, inference_timeout_s=self.settings.inference_timeout_s)
        self.telemetry.watch_health(monitor)
        self.health_monitor = monitor
        await guard.batcher.start()
        self.guard = guard
        if self.settings.config_file:
            self.policy_reloader = PolicyReloader(
                guard, self.settings.config_file, check=policy_check(guard.adapter)
            )
            if self._policy_watch_s > 0:
                self._spawn(self.policy_reloader.watch(self._policy_watch_s))
        await self._set_health(True)
        log.info("ready: health SERVING")

    def _backend_health_changed(self, healthy: bool, reason: str) -> None:
        """HealthMonitor callback: SERVING follows the backend's health (never while draining)."""
        if not self.draining and self.guard is not None:
            self._spawn(self._sync_health())

    async def _sync_health(self) -> None:
        monitor = self.health_monitor
        if not self.draining:
            await self._set_health(monitor is None or monitor.healthy)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def reload_policies(self) -> bool:
        """Re-reads the named policies from the config file (False: none configured, or the
        file is invalid and the old policies stay)."""
        if self.policy_reloader is None:
            log.warning("policy reload requested, but no config file is in use")
            return False
        return await asyncio.to_thread(self.policy_reloader.reload)

    def request_policy_reload(self) -> None:
        """SIGHUP handler: reload in the background, never blocking the event loop."""
        self._spawn(self.reload_policies())

    def call_started(self) -> None:
        self.in_flight += 1
        self._last_call_at = time.monotonic()
        self._idle.clear()

    def call_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def drain(self, grace_s: float | None = None) -> None:
        """NOT_SERVING at once; new calls get UNAVAILABLE/DRAINING (the port stays open so
        clients get a clear answer, not a refused connection); in-flight calls finish within
        the grace period; then the server stops."""
        grace = self.settings.drain_grace_s if grace_s is None else grace_s
        self.draining = True
        # open streams answer what they owe, then end (guardwire_server.drain)
        self.drain_event.set()
        if self.health_monitor is not None:
            self.health_monitor.close()
        for task in list(self._background):
            task.cancel()
        await self._set_health(False)
        log.info("draining: %d in-flight calls have %.1fs to finish", self.in_flight, grace)
        end = time.monotonic() + grace
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=grace)
        await self._wait_quiet(deadline=end)
        await self._server.stop(max(0.0, end - time.monotonic()))
        if self.guard is not None:
            await self.guard.batcher.stop(drain=True)
            await asyncio.to_thread(self.guard.backend.close)
        await asyncio.to_thread(self.telemetry.shutdown)  # flushes pending spans and metrics
        log.info("stopped")

    async def _wait_quiet(self, deadline: float) -> None:
        """Keeps refusing new calls with UNAVAILABLE until none arrived for ``drain_quiet_s``,
        for at most ``QUIET_WAIT_FACTOR`` times as long.

        gRPC core answers CANCELLED, not UNAVAILABLE, to a call that reaches the server while it
        closes but before a handler took it (grpc/grpc#41785); clients do not retry CANCELLED.
        Closing only once callers have gone quiet keeps that race to calls sent at that instant.
        The bound: callers that never go quiet (steady traffic over a kept-alive connection)
        need the close's GOAWAY to reconnect to another replica, so it must come soon.
        """
        quiet = self.settings.drain_quiet_s
        deadline = min(deadline, time.monotonic() + QUIET_WAIT_FACTOR * quiet)
        while True:
            now = time.monotonic()
            since_last, left = now - self._last_call_at, deadline - now
            if left <= 0 or (since_last >= quiet and self.in_flight == 0):
                return
            await asyncio.sleep(min(max(quiet - since_last, 0.01), left))

    async def wait_closed(self) -> None:
        await self._server.wait_for_termination()


def _config_error(exc: ConfigError) -> int:
    """The operator's fault: one line (the same as guardwire_server.cli's), exit status 2."""
    print(f"guardwire: configuration error: {exc}", file=sys.stderr)
    return 2


async def serve(
    settings: Settings,
    *,
    model_dir: Path | None = None,
    backend_options: dict[str, Any] | None = None,
) -> int:
    """Runs until SIGTERM/SIGINT, then drains. Returns the process exit code."""
    try:
        server = GuardServer(settings, model_dir=model_dir, backend_options=backend_options)
    except ConfigError as exc:  # a bad TLS file, otel_enabled without the otel extra, ...
        return _config_error(exc)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.request_policy_reload)
    try:
        await server.start()
    except ConfigError as exc:  # a busy port, a socket directory that is missing, ...
        return _config_error(exc)
    load_task = asyncio.create_task(server.load())
    stop_task = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({load_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    if load_task in done and load_task.exception() is not None:
        log.error("model failed to load: %s", load_task.exception())
        stop_task.cancel()
        await server.drain(0)
        return 1
    await stop_task
    if not load_task.done():
        load_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await load_task
    await server.drain()
    if server.guard is not None and server.guard.batcher.hung:
        # the interpreter would join the stuck worker thread at exit, forever: leave now
        log.error("an inference call is still stuck after the drain; exiting without it")
        logging.shutdown()
        os._exit(0)
    return 0
