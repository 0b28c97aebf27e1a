"""OpenVINO: the bundle's ONNX graphs on Intel's runtime, the fastest CPU path we have (docs/openvino.md).

- Graphs: OpenVINO's ONNX reader has no rule for our custom RoIAlign node and does not
  expand ONNX local functions itself, so the graph is inlined in memory at load time
  (`onnx.inliner.inline_local_functions`: the node becomes its standard-op body, the one
  ONNX Runtime runs). The bundle's files are never changed, so TensorRT and ORT get what
  they always got (docs/openvino.md, "Reading our graphs").
- Precisions: fp32 and bf16 run model.onnx at that inference precision, int8 runs the Q/DQ
  graph model.int8.onnx (OpenVINO turns Q/DQ into int8 kernels itself; its rest runs fp32).
  A precision the device does not list in OPTIMIZATION_CAPABILITIES is an error, and the
  compiled model is asked back which precision it took: never a silent downgrade (OpenVINO
  itself would quietly run bf16 as fp32 on a CPU without it, and by default picks bf16 on
  CPUs that have it, which is why fp32 is always asked for explicitly).
- Shapes: whatever the graph declares (one clip, or a leading stream dimension); inputs are
  checked against static input shapes only.

OpenVINO is imported inside the constructor, once, so importing this module is free.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from efficientvis_trt.contract import OUTPUT_NAMES
from efficientvis_trt.errors import BackendUnavailable, EvisError
from efficientvis_trt.extras import install_command
from efficientvis_trt.runtime.backends import ContractIO

log = logging.getLogger(__name__)

OPENVINO_INSTALL_HINT = install_command("openvino")
# precision -> (the bundle graph it runs, OpenVINO inference precision, device capability it needs)
OPENVINO_PRECISIONS: dict[str, tuple[str, str, str]] = {
    "fp32": ("fp32", "f32", "FP32"),
    "bf16": ("fp32", "bf16", "BF16"),
    "int8": ("int8", "f32", "INT8"),
}
_OV_DTYPES = {"u8": np.dtype(np.uint8), "f32": np.dtype(np.float32)}


def _one_line(exc: BaseException, prefer: str = "") -> str:
    """OpenVINO's exceptions carry multi-line reports: the line that says most (`prefer`), else the last one."""
    lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
    if not lines:
        return type(exc).__name__
    return next((s for s in lines if prefer and prefer in s), lines[-1])[:300]


def import_openvino():
    """The `openvino` module, or BackendUnavailable saying how to install it."""
    try:
        import openvino
    except ImportError:
        raise BackendUnavailable(f"OpenVINO is not installed: {OPENVINO_INSTALL_HINT}") from None
    return openvino


def device_capabilities(core, device: str = "CPU") -> list[str]:
    """What the device says it can do (e.g. ['FP32', 'BF16', 'INT8', ...])."""
    return [str(c) for c in core.get_property(device, "OPTIMIZATION_CAPABILITIES")]


def inference_precision(precision: str, capabilities: Collection[str], device: str = "CPU") -> str:
    """The OpenVINO inference precision for one of ours; a precision the device cannot do is an EvisError."""
    if precision not in OPENVINO_PRECISIONS:
        raise EvisError(
            f"the openvino backend runs {', '.join(OPENVINO_PRECISIONS)}, not {precision} "
            "(fp16 is a GPU precision here: use --backend ort or trt)"
        )
    _, hint, needs = OPENVINO_PRECISIONS[precision]
    if needs not in capabilities:
        can = [p for p, (_, _, cap) in OPENVINO_PRECISIONS.items() if cap in capabilities]
        raise EvisError(
            f"OpenVINO's {device} here cannot run {precision} (no {needs} in its OPTIMIZATION_CAPABILITIES: "
            f"{', '.join(capabilities) or 'none'}); use --precision {' or '.join(can) or 'fp32'}"
        )
    return hint


def read_inlined(core, onnx_path: str | os.PathLike):
    """An `ov.Model` of the ONNX graph with its local functions inlined in memory (the file is left as it is)."""
    import onnx
    import onnx.inliner

    try:
        model = onnx.load(str(onnx_path))
    except Exception as exc:  # DecodeError, OSError: a file that is not an ONNX model
        raise EvisError(f"cannot read {onnx_path} as ONNX: {exc}") from None
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    try:
        return core.read_model(model.SerializeToString())
    except Exception as exc:  # OpenVINO raises RuntimeError with a multi-line report
        why = _one_line(exc, prefer="No conversion rule")
        raise EvisError(f"OpenVINO cannot read {Path(onnx_path).name}: {why}") from None


class OpenVINOBackend(ContractIO):
    """One compiled OpenVINO model and one infer request; every output comes back as a fresh numpy array.

    On the CPU host memory is the device, so `keep_on_device` needs no special values here:
    kept outputs are numpy arrays too (copies, so the next `run` cannot overwrite them).
    """

    name = "openvino"
    device = "cpu"

    def __init__(
        self,
        onnx_path: str | os.PathLike,
        precision: str = "fp32",
        *,
        threads: int | None = None,
        device: str = "CPU",
    ):
        ov = import_openvino()
        core = ov.Core()
        self.precision = precision
        self.onnx_path = Path(onnx_path)
        self.ov_device = device
        self.inference_precision = inference_precision(precision, device_capabilities(core, device), device)
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": self.inference_precision,
            "PERFORMANCE_HINT": "LATENCY",  # one stream: one clip at a time, all threads on it
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        model = read_inlined(core, onnx_path)
        self._check_io(
            onnx_path,
            {
                p.get_any_name(): (
                    _OV_DTYPES.get(p.get_element_type().get_type_name()),
                    p.get_element_type(),
                    tuple(d.get_length() for d in p.get_partial_shape()) if p.get_partial_shape().is_static else None,
                )
                for p in model.inputs
            },
            {n for p in model.outputs for n in p.get_names()},
            extra_outputs=True,
            output_dtypes={
                n: _OV_DTYPES.get(t, t)
                for p in model.outputs
                for t in [p.get_element_type().get_type_name()]
                for n in p.get_names()
            },
        )
        try:
            self.compiled = core.compile_model(model, device, config)
        except Exception as exc:
            raise EvisError(f"OpenVINO cannot compile {Path(onnx_path).name} for {device}: {_one_line(exc)}") from None
        took = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if took != self.inference_precision:
            raise EvisError(f"OpenVINO compiled {precision} at {took}, not {self.inference_precision}, on {device}")
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        self._request = self.compiled.create_infer_request()
        self._outputs = [(name, self.compiled.output(name)) for name in OUTPUT_NAMES]

    def run(self, inputs: Mapping[str, Any], keep_on_device: Collection[str] = ()) -> dict[str, Any]:
        feed = self._host_feed(inputs)
        try:
            result = self._request.infer(feed, share_inputs=True, share_outputs=False)
        except Exception as exc:
            raise EvisError(f"OpenVINO failed on a clip: {_one_line(exc)}") from None
        return {name: result[port] for name, port in self._outputs}

    def to_host(self, value: Any) -> np.ndarray:
        return np.asarray(value)

    def close(self) -> None:
        self._request = None
        self.compiled = None


__all__ = [
    "OPENVINO_PRECISIONS",
    "OpenVINOBackend",
    "device_capabilities",
    "import_openvino",
    "inference_precision",
    "read_inlined",
]
