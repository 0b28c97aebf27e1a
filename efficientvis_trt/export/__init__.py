"""Export: PyTorch -> per-clip ONNX graph (custom RoIAlign node + local function) -> verified bundle.

`export_bundle` (exporter.py) and `verify_bundle` (verify.py) create and re-check bundles; the
bundle itself (`efficientvis_trt.bundle`) is a layer below, read by every later step. Heavy imports
stay inside the functions, so importing this package is cheap.
"""
