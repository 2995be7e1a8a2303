"""Draining open streams: answer what is owed, then end with UNAVAILABLE / DRAINING.

A ``StreamClassify`` stream can stay open for a whole conversation, far longer than the drain
grace period. On drain the server must not hold the shutdown until the grace expires, nor drop
checks it already owes. ``until_drained`` wraps a stream's request iterator: it passes messages
through until the drain event is set, then raises ``Draining`` instead of reading further. The
stream pipeline (``guardwire_server.streams.run_stream``) queues that error *behind* the checks
already
owed, so the client gets every owed answer first and then the stream ends with
UNAVAILABLE / DRAINING (retry on another replica, with the history in ``open``).

Example::

    async for response in run_stream(until_drained(requests, server.drain_event), ...):
        yield response
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

from guardwire_server.errors import Draining

__all__ = ["DRAINING_MESSAGE", "until_drained"]

T = TypeVar("T")
DRAINING_MESSAGE = (
    "the server is draining for shutdown; every check owed so far was answered; reopen the "
    "stream on another replica"
)


async def until_drained(requests: AsyncIterator[T], drained: asyncio.Event) -> AsyncIterator[T]:
    """Yields ``requests`` until ``drained`` is set, then raises ``Draining``. A message that
    arrives together with the drain is still passed on (its checks are owed and answered)."""
    iterator = requests.__aiter__()
    drain_wait: asyncio.Future[bool] = asyncio.ensure_future(drained.wait())
    read: asyncio.Future[T] | None = None
    try:
        while True:
            if drained.is_set():
                raise Draining(DRAINING_MESSAGE)
            read = asyncio.ensure_future(iterator.__anext__())
            waiting: set[asyncio.Future[object]] = {read, drain_wait}  # type: ignore[arg-type]
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not read.done():
                raise Draining(DRAINING_MESSAGE)
            try:
                message = read.result()
            except StopAsyncIteration:
                return
            read = None
            yield message
    finally:
        drain_wait.cancel()
        if read is not None and not read.done():
            read.cancel()  # the stream ends now: stop reading it
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await read
