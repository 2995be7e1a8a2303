"""Checkout shim: ``python bench/onnx_vs_torch.py`` runs the module in guardwire_tools.bench."""

from guardwire_tools.bench.onnx_vs_torch import main

if __name__ == "__main__":
    raise SystemExit(main())
