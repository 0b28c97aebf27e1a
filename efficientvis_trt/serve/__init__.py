"""Serving a bundle through Triton Inference Server (docs/serving.md).

- `repository`: `evis serve BUNDLE --repo DIR` writes a Triton model repository
  (tensorrt_plan, onnxruntime_onnx and a python-backend model), configs built from
  Triton's own ModelConfig protobuf.
- `triton_model`: the python-backend model (ONNX Runtime inside Triton), copied into
  the repository as `model.py`; it imports nothing from this package.
- `local_server`: the `tritonserver` that the nvidia-pytriton wheel bundles, run on
  127.0.0.1 from its own numpy<2 environment (tests, benchmarks, `evis serve --local`).
- `client`: `evis infer --server HOST:PORT`: the clip loop with a remote backend; each
  stream's tracklet state is held by the client and travels with every request.
"""
