"""MultiLevelRoIAlign on every backend with no C++ to compile.

* `spec`: the operator contract (ONNX node, attribute names) shared by everything below.
* `triton_roi_align`: the Triton kernel. ``multi_level_roi_align_triton(features, rois, attrs)``
  for torch tensors (CUDA; CPU under ``TRITON_INTERPRET=1``), ``compile_ptx(attrs, dtype, cc)``
  for TensorRT (works with no GPU), ``launch_geometry`` / ``covered_output_indices``.
* `trt_plugin`: ``select_plugin_path(trt_version)`` (pure: aot / jit / builtin-roialign /
  unavailable, with the reason) and ``register_trt_plugin()``, to call before parsing an
  ONNX model or deserializing an engine.
* `cli`: ``evis plugins`` prints the path this machine would take and why.

Importing this package (or any module in it) never imports TensorRT, Triton or torch.
"""
