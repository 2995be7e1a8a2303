"""Guardwire sidecar server: gRPC edge, validation, adapters, micro-batcher, lifecycle."""
