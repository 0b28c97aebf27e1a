"""TensorRT backend: a deserialized engine, CUDA buffers through cuda-python, one non-default stream.

Why it looks like this:
- No torch import and no pycuda: NVIDIA's own Python samples use cuda-python since
  TensorRT 10.14 (samples/python/common_runtime.py in NVIDIA/TensorRT). Every cuda-python
  call returns a tuple whose first item is an error code; `_cuda` checks each one.
- Name-based I/O only (`num_io_tensors`, `get_tensor_name`, `get_tensor_mode`,
  `set_tensor_address`, `execute_async_v3`), the API that exists from 10.0 through 11.x
  (https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-8x-to-10x-python-api-patterns.html,
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/ExecutionContext.html).
- The tracklet state stays on the GPU: `query_out`/`boxes_out` are handed back as
  `TrtDeviceTensor`s that point into this backend's output buffers; the next `run` copies
  them device-to-device into the `query_in`/`boxes_in` buffers on the same stream, before
  the enqueue, so no host round trip happens between clips. Tensor addresses never
  change, which is also what a captured CUDA graph requires.
- Loading goes through `efficientvis_trt.trt.engine.deserialize` (the one deserialize: sidecar
  check, ``init_libnvinfer_plugins`` and our plugin, a one-line rebuild message;
  docs/tensorrt.md, "The TensorRT layer").

Everything TensorRT/CUDA is imported inside the constructor, so importing this module is
free and a missing TensorRT is one BackendUnavailable line.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from efficientvis_trt.contract import INPUT_NAMES, OUTPUT_NAMES, check_precision
from efficientvis_trt.errors import EvisError
from efficientvis_trt.runtime.backends import ContractIO
from efficientvis_trt.trt.env import cuda_check as _cuda
from efficientvis_trt.trt.env import import_cudart, import_tensorrt, runtime_available

log = logging.getLogger(__name__)


class TrtDeviceTensor:
    """A tensor in one of a TensorRTBackend's device buffers; valid until that backend's next `run`."""

    __slots__ = ("name", "ptr", "shape", "dtype", "nbytes", "owner", "generation")

    def __init__(
        self, name: str, ptr: int, shape: tuple[int, ...], dtype: np.dtype, owner: TensorRTBackend, generation: int
    ):
        self.name, self.ptr, self.shape, self.dtype = name, int(ptr), tuple(shape), np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.owner, self.generation = owner, generation

    def __repr__(self) -> str:
        return f"TrtDeviceTensor({self.name}, {list(self.shape)} {self.dtype}, 0x{self.ptr:x})"


class TensorRTBackend(ContractIO):
    """Run one TensorRT plan per clip; see the module docstring for the memory and state design.

    `cuda_graph=True` captures the enqueue into a CUDA graph after one ordinary warm-up
    enqueue and replays it for every later clip (fixed shapes and addresses make that
    valid). If capture fails (some engines cannot be captured) it logs why and keeps
    using `execute_async_v3`.
    """

    name = "tensorrt"
    device = "cuda"

    def __init__(
        self,
        engine_path: str | os.PathLike,
        precision: str,
        *,
        bundle_path: str | os.PathLike | None = None,
        cuda_graph: bool = False,
        device_index: int = 0,
    ):
        check_precision(precision)
        self.precision = precision
        self.engine_path = Path(engine_path)
        self._closed = True
        trt = import_tensorrt("Runtime")
        cudart = import_cudart()
        self.trt, self.cudart = trt, cudart
        if not self.engine_path.is_file():
            raise EvisError(f"TensorRT engine not found: {self.engine_path}")
        self.device_index = device_index
        _cuda(cudart, cudart.cudaSetDevice(device_index), "cudaSetDevice")
        _cuda(cudart, cudart.cudaFree(0), "cudaFree(0)")  # create the context before measuring memory
        self._free_before = int(_cuda(cudart, cudart.cudaMemGetInfo(), "cudaMemGetInfo")[0])
        self._thread = threading.get_ident()
        from efficientvis_trt.trt.engine import deserialize

        # The one deserialize: sidecar check, init_libnvinfer_plugins + our plugin, then the plan.
        self._engine, self._runtime, self.metadata, self._logger = deserialize(
            self.engine_path, bundle_path, precision=precision
        )
        self.gpu_name = str(self.metadata.get("gpu") or "")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EvisError(
                f"TensorRT could not create an execution context for {self.engine_path.name} (out of GPU memory?)"
            )
        # One non-default stream for everything (never the legacy default stream).
        flags = getattr(cudart, "cudaStreamNonBlocking", 1)
        self._stream = _cuda(cudart, cudart.cudaStreamCreateWithFlags(flags), "cudaStreamCreateWithFlags")
        self._stream_handle = int(self._stream)
        self._device: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}
        self._host_ptr: dict[str, int] = {}
        self._raw: dict[str, np.ndarray] = {}  # the whole pinned buffer (sized for the largest B)
        self._batch_shapes: dict[str, tuple[int, ...]] = {}  # shapes at the current B
        self.shapes: dict[str, tuple[int, ...]] = {}  # shapes at the largest B
        self.dtypes: dict[str, np.dtype] = {}
        self._generation = 0
        self._want_graph = bool(cuda_graph)
        self._graph_tried = False
        self._graph = None
        self._graph_exec = None
        self.graph_status = "off" if not cuda_graph else "pending"
        self._events: tuple[Any, Any] | None = None
        self._compute_ms: list[float] = []
        self._closed = False
        try:
            self._allocate()
            self._events = (
                _cuda(cudart, cudart.cudaEventCreate(), "cudaEventCreate"),
                _cuda(cudart, cudart.cudaEventCreate(), "cudaEventCreate"),
            )
        except BaseException:
            self.close()
            raise
        free_after = int(_cuda(cudart, cudart.cudaMemGetInfo(), "cudaMemGetInfo")[0])
        self.device_bytes = max(0, self._free_before - free_after)  # engine weights + activations + I/O buffers

    # ---- setup --------------------------------------------------------------------------
    def _allocate(self) -> None:
        """Device + pinned host buffers for every tensor, sized for the engine's largest B.

        Every graph is batched (docs/contract.md, "Batched graph"): the engine's leading
        dimension is dynamic, its optimisation profile (`evis build --batch MIN:OPT:MAX`)
        bounds B, and `run` sets the B of each call (`_set_batch`). Buffers are allocated
        once for MAX, so changing B never reallocates. A static engine keeps its one shape.
        """
        trt, cudart, engine = self.trt, self.cudart, self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        dtypes = {name: np.dtype(trt.nptype(engine.get_tensor_dtype(name))) for name in names}
        is_input = {name: engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT for name in names}
        # Names, directions and input dtypes: the same check (and messages) as every other backend.
        # Shapes are checked per call instead (`_set_batch`), because B may be dynamic here.
        self._check_io(
            f"engine {self.engine_path.name}",
            {name: (dtypes[name], str(dtypes[name]), None) for name in names if is_input[name]},
            [name for name in names if not is_input[name]],
            output_dtypes={name: dtypes[name] for name in names if not is_input[name]},
        )
        declared: dict[str, tuple[int, ...]] = {}
        for name in names:
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            if any(d < 0 for d in shape[1:]):
                raise EvisError(
                    f"engine {self.engine_path.name}: {name!r} has a dynamic shape {list(shape)}; only the "
                    "leading streams dimension B may be dynamic (rebuild it from the bundle's graph)"
                )
            declared[name] = shape
        self.dynamic_batch = any(s[0] < 0 for s in declared.values())
        if self.dynamic_batch:
            lows, highs = zip(
                *(
                    (int(engine.get_tensor_profile_shape(n, 0)[0][0]), int(engine.get_tensor_profile_shape(n, 0)[2][0]))
                    for n in INPUT_NAMES
                )
            )
            self.batch_range = (max(lows), min(highs))
        else:
            self.batch_range = (declared["frames"][0], declared["frames"][0])
        top = self.batch_range[1]
        for name in names:
            shape = declared[name]
            full = (top, *shape[1:]) if shape[0] < 0 else shape
            dtype = dtypes[name]
            nbytes = int(np.prod(full)) * dtype.itemsize
            self.shapes[name], self.dtypes[name] = full, dtype
            self._device[name] = int(_cuda(cudart, cudart.cudaMalloc(nbytes), f"cudaMalloc({name})"))
            # Pinned host memory so the async copies really are async (as the NVIDIA samples do).
            host_ptr = int(_cuda(cudart, cudart.cudaMallocHost(nbytes), f"cudaMallocHost({name})"))
            self._host_ptr[name] = host_ptr
            self._raw[name] = np.ctypeslib.as_array(ctypes.cast(host_ptr, ctypes.POINTER(ctypes.c_uint8)), (nbytes,))
            if not self._context.set_tensor_address(name, self._device[name]):
                raise EvisError(f"TensorRT rejected the address of {name!r}")
        self._batch = 0
        self._set_batch(self.batch_range[0])

    def _set_batch(self, b: int) -> None:
        """Make the next enqueue run B = `b` streams (input shapes on the context, host views of that size)."""
        if b == self._batch:
            return
        lo, hi = self.batch_range
        if not lo <= b <= hi:
            profile = f"{lo}:{hi}" if self.dynamic_batch else f"{lo} (static)"
            raise EvisError(
                f"engine {self.engine_path.name} runs B = {profile} streams, got {b}: rebuild it with "
                f"`evis build BUNDLE --backend trt --batch 1:{b}:{b}` (or fewer --streams)"
            )
        if self._graph_exec is not None:
            raise EvisError("a captured CUDA graph fixes B: --cuda-graph runs one stream (no --streams)")
        for name in INPUT_NAMES:
            shape = (b, *self.shapes[name][1:])
            if self.dynamic_batch and not self._context.set_input_shape(name, shape):
                raise EvisError(f"TensorRT rejected the shape {list(shape)} of {name!r}")
        for name in INPUT_NAMES + OUTPUT_NAMES:
            shape = (b, *self.shapes[name][1:])
            if name in OUTPUT_NAMES and self.dynamic_batch:
                got = tuple(int(d) for d in self._context.get_tensor_shape(name))
                if got != shape:
                    raise EvisError(f"engine output {name!r} is {list(got)} for B = {b}, expected {list(shape)}")
            nbytes = int(np.prod(shape)) * self.dtypes[name].itemsize
            self._host[name] = self._raw[name][:nbytes].view(self.dtypes[name]).reshape(shape)
            self._batch_shapes[name] = shape
        self._batch = b

    # ---- running ------------------------------------------------------------------------
    def _copy(self, dst: int, src: int, nbytes: int, kind: str) -> None:
        k = getattr(self.cudart.cudaMemcpyKind, f"cudaMemcpy{kind}")
        _cuda(self.cudart, self.cudart.cudaMemcpyAsync(dst, src, nbytes, k, self._stream), f"cudaMemcpyAsync {kind}")

    def _sync(self) -> None:
        _cuda(self.cudart, self.cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def _stage_input(self, name: str, value: Any) -> None:
        nbytes = self._host[name].nbytes
        if isinstance(value, TrtDeviceTensor):
            if value.owner is not self:
                raise EvisError(f"{name}: a device tensor from another TensorRT backend cannot be used here")
            if value.generation != self._generation:
                raise EvisError(f"{name}: stale device tensor (it was overwritten by a later clip)")
            if value.shape != self._batch_shapes[name] or value.dtype != self.dtypes[name]:
                raise EvisError(
                    f"{name}: device tensor is {list(value.shape)} {value.dtype}, "
                    f"expected {list(self._batch_shapes[name])} {self.dtypes[name]}"
                )
            if value.ptr != self._device[name]:
                self._copy(self._device[name], value.ptr, nbytes, "DeviceToDevice")
            return
        arr = np.asarray(value)
        if name == "frames" and arr.dtype != np.uint8:
            raise EvisError(f"frames must be uint8 BGR, got {arr.dtype}")
        if tuple(arr.shape) != self._batch_shapes[name]:
            raise EvisError(
                f"input {name!r} has shape {list(arr.shape)}, the engine expects {list(self._batch_shapes[name])}"
            )
        np.copyto(self._host[name], arr, casting="same_kind")
        self._copy(self._device[name], self._host_ptr[name], nbytes, "HostToDevice")

    def _enqueue(self) -> None:
        if self._graph_exec is not None:
            _cuda(self.cudart, self.cudart.cudaGraphLaunch(self._graph_exec, self._stream), "cudaGraphLaunch")
            return
        if not self._context.execute_async_v3(self._stream_handle):
            raise EvisError("TensorRT execute_async_v3 failed (see the TensorRT log above)")

    def _capture_graph(self) -> None:
        """Capture one enqueue into a CUDA graph (after a warm-up enqueue, on our non-default stream).

        TensorRT's guide (Optimizing TensorRT Performance -> CUDA Graphs,
        https://docs.nvidia.com/deeplearning/tensorrt/latest/performance/optimization.html):
        call execute once before capturing so deferred setup is done, capture on a
        non-default stream, and the graph fixes the shapes and tensor addresses. Thread-local
        capture mode, so other threads' CUDA calls cannot invalidate the capture.
        """
        cudart = self.cudart
        self._graph_tried = True
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        _cuda(cudart, cudart.cudaStreamBeginCapture(self._stream, mode), "cudaStreamBeginCapture")
        ok = False
        try:
            ok = bool(self._context.execute_async_v3(self._stream_handle))
        finally:
            end = cudart.cudaStreamEndCapture(self._stream)  # always leave capture mode
        err, graph = end[0], end[1]
        captured = int(err) == int(cudart.cudaError_t.cudaSuccess) and graph is not None and int(graph) != 0
        if not ok or not captured:
            self.graph_status = f"capture failed ({err}); running without CUDA graphs"
            log.warning("CUDA graph %s", self.graph_status)
            if captured:
                cudart.cudaGraphDestroy(graph)
            return
        self._graph = graph
        # CUDA 12 bindings: cudaGraphInstantiate(graph, flags) -> (err, exec); older ones return more values.
        made = _cuda(cudart, cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        self._graph_exec = made[0] if isinstance(made, tuple) else made
        self.graph_status = "on"

    def run(self, inputs: Mapping[str, Any], keep_on_device: Collection[str] = ()) -> dict[str, Any]:
        if self._closed:
            raise EvisError("the TensorRT backend was closed")
        if threading.get_ident() != self._thread:  # the current device is per host thread
            _cuda(self.cudart, self.cudart.cudaSetDevice(self.device_index), "cudaSetDevice")
            self._thread = threading.get_ident()
        self._set_batch(int(np.shape(inputs["frames"])[0]))  # B of this call (frames always come from the host)
        for name in INPUT_NAMES:
            self._stage_input(name, inputs[name])
        start, end = self._events
        _cuda(self.cudart, self.cudart.cudaEventRecord(start, self._stream), "cudaEventRecord")
        self._enqueue()
        _cuda(self.cudart, self.cudart.cudaEventRecord(end, self._stream), "cudaEventRecord")
        self._generation += 1  # device tensors handed out before this run are now stale
        out: dict[str, Any] = {}
        for name in OUTPUT_NAMES:
            if name in keep_on_device:
                out[name] = TrtDeviceTensor(
                    name, self._device[name], self._batch_shapes[name], self.dtypes[name], self, self._generation
                )
            else:
                self._copy(self._host_ptr[name], self._device[name], self._host[name].nbytes, "DeviceToHost")
        self._sync()
        ms = _cuda(self.cudart, self.cudart.cudaEventElapsedTime(start, end), "cudaEventElapsedTime")
        self._compute_ms = (self._compute_ms + [float(ms)])[-256:]
        for name in OUTPUT_NAMES:
            if name not in keep_on_device:
                out[name] = self._host[name].copy()  # the pinned buffer is reused by the next clip
        if self._want_graph and not self._graph_tried:
            self._capture_graph()
        return out

    def device_report(self) -> dict[str, float]:
        """GPU-only bench columns: device memory this backend took, median GPU time of the enqueue (no copies)."""
        out = {"device_mb": self.device_bytes / 2**20}
        if self._compute_ms:
            from efficientvis_trt.timing import latency_stats

            out["gpu_compute_ms"] = latency_stats([ms / 1000.0 for ms in self._compute_ms]).p50_ms
        return out

    def to_host(self, value: Any) -> np.ndarray:
        if not isinstance(value, TrtDeviceTensor):
            return np.asarray(value)
        if value.owner is not self or value.generation != self._generation:
            raise EvisError(f"{value.name}: stale or foreign device tensor")
        self._copy(self._host_ptr[value.name], value.ptr, value.nbytes, "DeviceToHost")
        self._sync()
        return self._host[value.name].copy()

    def close(self) -> None:
        """Free everything after the stream drained (never free memory the GPU may still use)."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        cudart = self.cudart
        try:
            cudart.cudaStreamSynchronize(self._stream)
        finally:
            if self._graph_exec is not None:
                cudart.cudaGraphExecDestroy(self._graph_exec)
            if self._graph is not None:
                cudart.cudaGraphDestroy(self._graph)
            for event in self._events or ():
                cudart.cudaEventDestroy(event)
            for ptr in self._device.values():
                cudart.cudaFree(ptr)
            for ptr in self._host_ptr.values():
                cudart.cudaFreeHost(ptr)
            self._device.clear()
            self._host_ptr.clear()
            self._host.clear()
            self._context = None
            self._engine = None
            self._runtime = None
            cudart.cudaStreamDestroy(self._stream)

    def __del__(self) -> None:  # best effort; explicit close() is the contract
        with contextlib.suppress(Exception):
            self.close()


__all__ = ["TensorRTBackend", "TrtDeviceTensor", "runtime_available"]
