"""The one TensorRT layer, below both engine building (`precision`, `evis build`) and running (`runtime`).

* `env`: the TensorRT and cuda-python imports (lazy, once), the cuda-python error check, the GPU
  (name, compute capability), TensorRT version parsing, the install hint, the ONNX opset cap.
* `plugin`: the TensorRT plugin ``efficientvis::MultiLevelRoIAlign`` (the Triton kernel of
  `plugins.triton_roi_align` behind ``tensorrt.plugin``), the choice of its path, and
  `prepare_plugins` (``init_libnvinfer_plugins`` before every parse and deserialize, our Python
  plugin registered once per process).
* `engine`: engine file names, finding them, the sidecar JSON, the compatibility check, the rebuild
  hint, and `deserialize`, the one place a plan is loaded.
* `layers`: the layer-precision verdict from the engine inspector's JSON (pure).
* `build`: the engine build (Polygraphy for network, config and engine bytes; ours for the timing
  cache check, the optional batch profile, the plugin path really taken and the precision check).
* `parser_rules`, `install_checks`: what TensorRT's ONNX parser accepts; what an install holds.

Design: docs/tensorrt.md, "The TensorRT layer". Importing any of these modules imports neither
TensorRT nor cuda-python.
"""
