"""Inference backends: tensors and devices, no gRPC and no prompt formats."""
