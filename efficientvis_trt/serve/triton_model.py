"""Triton python-backend model: a bundle's per-clip ONNX graph on ONNX Runtime, inside Triton.

`evis serve` copies this file into the repository as evis_python/1/model.py; it runs in
Triton's Python backend stub, so it imports only numpy, onnxruntime and Triton's
`triton_python_backend_utils` (never efficientvis_trt). Triton's python backend needs
numpy < 2 in the stub's environment (with numpy 2 its tensors come back wrong).

A dynamic batch is a list of requests, each with its own streams (the leading stream
dimension of the batched graph): they are concatenated, run through the graph in one call,
and split back. A bad request gets its own error
response and never takes the model or the other requests of its batch down: Triton has
already checked names, dtypes and shapes against config.pbtxt; this checks what it cannot
(the bundle fingerprint the client says its state belongs to, finite state values).
See docs/serving.md, "The python-backend model".
"""

from __future__ import annotations

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

FINGERPRINT_PARAMETER = "evis_fingerprint"


def _error(message: str):
    """An error response; INVALID_ARG (HTTP 400, gRPC INVALID_ARGUMENT) where the backend has codes."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        graph = os.path.join(args["model_repository"], args["model_version"], params["evis_graph"])
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        threads = int(params.get("evis_threads") or 0)
        if threads > 0:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(graph, sess_options=opts, providers=["CPUExecutionProvider"])
        # names come from config.pbtxt, written by `evis serve` from the bundle's I/O table
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        self.state_inputs = [n for n in params.get("evis_state_inputs", "").split(",") if n]
        self.fingerprint = params["evis_fingerprint"]
        pb_utils.Logger.log_info(f"evis_python: {graph}, numpy {np.__version__}, onnxruntime {ort.__version__}")

    # ---- per request -----------------------------------------------------------------------------
    def _inputs(self, request) -> dict:
        """The request's inputs, or a ValueError saying what is wrong with them."""
        raw = request.parameters() if hasattr(request, "parameters") else "{}"
        params = json.loads(raw or "{}")
        said = params.get(FINGERPRINT_PARAMETER)
        if said is not None and said != self.fingerprint:
            raise ValueError(
                f"the request's state belongs to another bundle ({FINGERPRINT_PARAMETER} {str(said)[:16]}...; "
                f"this model serves {self.fingerprint[:16]}...): start the stream from this model's clip-0 state"
            )
        feeds = {}
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"input {name!r} is missing")
            feeds[name] = tensor.as_numpy()
        streams = {feeds[n].shape[0] for n in self.inputs}
        if len(streams) != 1:
            raise ValueError(f"{', '.join(self.inputs)} give different stream counts {sorted(streams)}")
        for name in self.state_inputs:
            if not np.isfinite(feeds[name]).all():
                raise ValueError(f"{name} has NaN or infinite values: not a state this model produced")
        return feeds

    def _run(self, feeds: dict) -> dict:
        return dict(zip(self.outputs, self.session.run(self.outputs, feeds)))

    def execute(self, requests):
        responses = [None] * len(requests)
        good = []
        for i, request in enumerate(requests):
            try:
                good.append((i, self._inputs(request)))
            except Exception as exc:  # a bad request answers with its own error, never an exception here
                responses[i] = pb_utils.InferenceResponse(error=_error(f"evis_python: {exc}"))
        if good:
            try:
                feeds = {n: np.concatenate([f[n] for _, f in good]) for n in self.inputs}
                out = self._run(feeds)
                start = 0
                for i, f in good:
                    stop = start + f[self.inputs[0]].shape[0]
                    tensors = [pb_utils.Tensor(n, np.ascontiguousarray(out[n][start:stop])) for n in self.outputs]
                    responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                    start = stop
            except Exception as exc:
                message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
                for i, _ in good:
                    responses[i] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"evis_python: ONNX Runtime failed: {message}")
                    )
        return responses

    def finalize(self):
        self.session = None
