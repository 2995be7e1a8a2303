"""Reflection exposes what a client needs to decode errors: the ErrorReason enum of
guardwire.v1 and google.rpc's error-detail messages (ErrorInfo, BadRequest, RetryInfo)."""

from __future__ import annotations

import asyncio

import grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

SYMBOLS = (
    "guardwire.v1.ErrorReason",
    "google.rpc.ErrorInfo",
    "google.rpc.BadRequest",
    "google.rpc.RetryInfo",
)


def _files_of(target: str) -> dict[str, str]:
    with grpc.insecure_channel(target) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        return {s: db.FindFileContainingSymbol(s).name for s in SYMBOLS}


async def test_reflection_finds_the_error_detail_types(fake_server) -> None:
    # a blocking client: run it off the event loop that serves the calls
    files = await asyncio.to_thread(_files_of, fake_server.target)
    assert files["guardwire.v1.ErrorReason"] == "guardwire/v1/error_reason.proto"
    assert files["google.rpc.ErrorInfo"] == "google/rpc/error_details.proto"
