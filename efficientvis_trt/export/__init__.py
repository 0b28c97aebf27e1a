"""Export: PyTorch -> per-clip ONNX graph (custom RoIAlign node + local function) -> verified bundle.

`Bundle` (bundle.py) is the API every later step uses; `export_bundle` (exporter.py) and
`verify_bundle` (verify.py) create and re-check bundles. Heavy imports stay inside the
functions, so importing this package is cheap.
"""

from efficientvis_trt.contract import IO_TABLE, PRECISIONS
from efficientvis_trt.export.bundle import Bundle

__all__ = ["Bundle", "IO_TABLE", "PRECISIONS"]
