"""Backends: a dict of named arrays in, a dict of named arrays out (docs/contract.md, "I/O table").

The protocol is deliberately small so the one clip loop serves every backend:

    out = backend.run({"frames": ..., "query_in": ..., "boxes_in": ...}, keep_on_device=STATE_OUTPUTS)

(clip loops call it through `contract.step`, which builds that dict from a `TrackletState`).

Outputs not named in `keep_on_device` come back as host numpy arrays. Named ones come
back as the backend's own device values (a torch tensor, an ORT OrtValue, a TensorRT
device buffer), which the next `run` of the same backend accepts as `query_in` /
`boxes_in`: the tracklet state then never leaves the device between clips, while the
runtime still holds it as named tensors (no hidden state in a backend, docs/runtime.md, "Backends").
`to_host` turns any such value into a numpy array when it is really needed.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from efficientvis_trt.contract import (
    INPUT_DTYPES,
    INPUT_NAMES,
    OUTPUT_NAMES,
    check_run_precision,
)
from efficientvis_trt.errors import BackendUnavailable, EvisError
from efficientvis_trt.extras import install_command

log = logging.getLogger(__name__)


class Backend(Protocol):
    """One clip in, the contract's outputs out; see the module docstring."""

    name: str  # "torch" | "onnxruntime" | "tensorrt" | "openvino"
    precision: str  # "fp32" | "fp16" | "bf16" | "int8"
    device: str  # "cpu" | "cuda"

    def run(self, inputs: Mapping[str, Any], keep_on_device: Collection[str] = ()) -> dict[str, Any]:
        """`frames` [T,H,W,3] uint8, `query_in` [N,C], `boxes_in` [N,4] (numpy or this backend's device values)."""
        ...

    def to_host(self, value: Any) -> np.ndarray:
        """A numpy copy of an output (identity for numpy)."""
        ...

    def close(self) -> None:
        """Release device memory; the backend is unusable afterwards."""
        ...


BF16_BACKEND_HINT = "bf16 runs on the openvino backend (the fp32 graph at bf16 inference precision)"


def check_host_input(name: str, value: np.ndarray, shape: Sequence[int] | None) -> np.ndarray:
    """A contiguous array of the input's contract dtype; frames of another dtype or a wrong static shape are errors."""
    arr = np.asarray(value)
    want = INPUT_DTYPES[name]
    if arr.dtype != want:
        if name == "frames":
            raise EvisError(f"frames must be uint8 BGR (as OpenCV decodes them), got {arr.dtype}")
        arr = arr.astype(want)
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise EvisError(f"input {name!r} has shape {list(arr.shape)}, the model expects {list(shape)}")
    return np.ascontiguousarray(arr)


def _static(shape: Sequence[Any]) -> tuple[int, ...] | None:
    """A shape whose every dimension is a number, else None (a named or unknown dimension)."""
    shape = tuple(shape)
    return shape if all(isinstance(d, int) for d in shape) else None


class ContractIO:
    """The one check of a graph's declared I/O against the contract, for backends that load a graph file.

    `_check_io` runs once, when the graph is loaded: the input and output names, each input's dtype, and
    each input's static shape (kept in `input_shapes` for `_host_feed`, which checks every clip's feed).
    """

    input_shapes: dict[str, tuple[int, ...] | None]

    def _check_io(
        self,
        where: Any,
        inputs: Mapping[str, tuple[Any, str, tuple[int, ...] | None]],
        outputs: Collection[str],
        *,
        extra_outputs: bool = False,
        output_dtypes: Mapping[str, Any] | None = None,
    ) -> None:
        """`inputs`: name -> (numpy dtype or None, the type as the runtime writes it, static shape or None).

        `output_dtypes` (name -> numpy dtype), where the runtime states them before a run: every contract
        output is float32.
        """
        outputs_ok = set(OUTPUT_NAMES) <= set(outputs) if extra_outputs else set(outputs) == set(OUTPUT_NAMES)
        names_ok = set(inputs) == set(INPUT_NAMES) and outputs_ok
        if not names_ok:
            raise EvisError(
                f"{where} does not have the per-clip I/O (inputs {sorted(inputs)}, outputs {sorted(outputs)}; "
                f"expected {list(INPUT_NAMES)} -> {list(OUTPUT_NAMES)})"
            )
        self.input_shapes = {}
        for name, (dtype, type_text, shape) in inputs.items():
            if dtype != INPUT_DTYPES[name]:
                raise EvisError(
                    f"{where}: input {name!r} is {type_text}, expected {INPUT_DTYPES[name]} "
                    "(I/O types are the same at every precision)"
                )
            self.input_shapes[name] = shape
        for name, dtype in (output_dtypes or {}).items():
            if name in OUTPUT_NAMES and dtype != np.float32:
                raise EvisError(
                    f"{where}: output {name!r} is {dtype}, expected float32 (I/O types are the same at every precision)"
                )

    def _host_feed(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Every contract input as a contiguous host array of its dtype and the graph's static shape."""
        return {name: check_host_input(name, inputs[name], self.input_shapes.get(name)) for name in INPUT_NAMES}


# ---- PyTorch -----------------------------------------------------------------------------


class TorchBackend:
    """Eager PyTorch: fp32 on CPU or CUDA, fp16 (autocast) on CUDA. Kept outputs are device tensors."""

    name = "torch"

    def __init__(self, model, device: str = "cpu", precision: str = "fp32"):
        import torch

        check_run_precision(precision)
        if precision not in ("fp32", "fp16"):
            raise EvisError(
                f"the torch backend runs fp32 or fp16, not {precision} "
                + (
                    "(int8 is an ONNX/TensorRT graph: use --backend ort or trt)"
                    if precision == "int8"
                    else f"({BF16_BACKEND_HINT})"
                )
            )
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable("CUDA was asked for but torch sees no CUDA device (use --device cpu)")
        if precision == "fp16" and not device.startswith("cuda"):
            raise EvisError("fp16 PyTorch needs a CUDA device (--device cuda); on CPU use fp32 or ONNX Runtime")
        self.torch = torch
        self.device = "cuda" if device.startswith("cuda") else "cpu"
        self.torch_device = torch.device(device)  # with its index (cuda:1)
        self.precision = precision
        self.model = model.to(self.torch_device).eval()

    def _tensor(self, name: str, value: Any):
        torch = self.torch
        if isinstance(value, torch.Tensor):
            return value.to(self.torch_device)
        return torch.from_numpy(check_host_input(name, value, None)).to(self.torch_device)

    def run(self, inputs: Mapping[str, Any], keep_on_device: Collection[str] = ()) -> dict[str, Any]:
        torch = self.torch
        args = [self._tensor(k, inputs[k]) for k in INPUT_NAMES]
        with (
            torch.inference_mode(),
            torch.autocast(self.torch_device.type, dtype=torch.float16, enabled=self.precision == "fp16"),
        ):
            out = self.model.forward_clip(*args)
        return {k: (v.float() if k in keep_on_device else v.float().cpu().numpy()) for k, v in out.items()}

    def to_host(self, value: Any) -> np.ndarray:
        if isinstance(value, self.torch.Tensor):
            return value.detach().float().cpu().numpy()
        return np.asarray(value)

    def close(self) -> None:
        self.model = None


# ---- ONNX Runtime --------------------------------------------------------------------------

_ORT_TYPES = {"tensor(uint8)": np.dtype(np.uint8), "tensor(float)": np.dtype(np.float32)}
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def ort_providers_for(device: str, providers: Sequence[Any] | None = None) -> list[Any]:
    """The execution providers for `device`, or the caller's list checked against what is installed."""
    import onnxruntime as ort

    from efficientvis_trt.ort_session import provider_name

    available = ort.get_available_providers()
    if providers:
        names = [provider_name(p) for p in providers]
        missing = [n for n in names if n not in available]
        if missing:
            raise BackendUnavailable(
                f"ONNX Runtime execution provider {missing[0]} is not installed (available: {', '.join(available)})"
            )
        return list(providers)
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        raise BackendUnavailable(
            "ONNX Runtime has no CUDAExecutionProvider here: install onnxruntime-gpu "
            f"(`{install_command('gpu')}` in this repository, with onnxruntime uninstalled) or use --device cpu"
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


class OrtBackend(ContractIO):
    """ONNX Runtime on any execution provider, through IOBinding.

    Frames and a numpy state are bound from host memory; kept outputs are OrtValues on the
    provider's device (CUDA memory with the CUDA/TensorRT providers), and an OrtValue state
    is bound as-is, so on a GPU the state never makes a host round trip. The same code path
    runs on the CPU provider, where the "device" is host memory.
    """

    name = "onnxruntime"

    def __init__(
        self,
        onnx_path,
        precision: str = "fp32",
        device: str = "cpu",
        providers: Sequence[Any] | None = None,
        threads: int | None = None,
        device_id: int = 0,
    ):
        import onnxruntime as ort

        from efficientvis_trt.ort_session import make_session, provider_name

        check_run_precision(precision)
        self.ort = ort
        self.precision = precision
        chosen = ort_providers_for(device, providers)
        first = provider_name(chosen[0])
        self.device = "cuda" if first in _GPU_PROVIDERS else "cpu"
        self.device_id = device_id
        self.session = make_session(onnx_path, providers=chosen, threads=threads)
        active = self.session.get_providers()
        if self.device == "cuda" and active[0] not in _GPU_PROVIDERS:
            # ORT silently falls back to the CPU when the CUDA libraries do not load: never accept that.
            raise BackendUnavailable(
                f"ONNX Runtime could not start {first} (CUDA/cuDNN libraries missing?); "
                f"active providers: {', '.join(active)}"
            )
        self.providers = active
        self._check_io(
            onnx_path,
            {i.name: (_ORT_TYPES.get(i.type), i.type, _static(i.shape)) for i in self.session.get_inputs()},
            [o.name for o in self.session.get_outputs()],
            output_dtypes={o.name: _ORT_TYPES.get(o.type, o.type) for o in self.session.get_outputs()},
        )
        self._out_device = ("cuda", device_id) if self.device == "cuda" else ("cpu", 0)

    def run(self, inputs: Mapping[str, Any], keep_on_device: Collection[str] = ()) -> dict[str, Any]:
        binding = self.session.io_binding()
        for name in INPUT_NAMES:
            value = inputs[name]
            if isinstance(value, self.ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, check_host_input(name, value, self.input_shapes.get(name)))
        for name in OUTPUT_NAMES:
            if name in keep_on_device:
                binding.bind_output(name, *self._out_device)
            else:
                binding.bind_output(name, "cpu")
        try:
            self.session.run_with_iobinding(binding)
        except Exception as exc:
            msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise EvisError(f"ONNX Runtime failed on a clip: {msg}") from None
        values = binding.get_outputs()
        return {name: (v if name in keep_on_device else v.numpy()) for name, v in zip(OUTPUT_NAMES, values)}

    def to_host(self, value: Any) -> np.ndarray:
        if isinstance(value, self.ort.OrtValue):
            return value.numpy()
        return np.asarray(value)

    def close(self) -> None:
        self.session = None


__all__ = [
    "Backend",
    "TorchBackend",
    "OrtBackend",
    "ort_providers_for",
]
