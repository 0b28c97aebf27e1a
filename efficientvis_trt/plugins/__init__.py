"""MultiLevelRoIAlign on every backend with no C++ to compile.

* `spec`: the operator contract (ONNX node, attribute names) shared by everything below.
* `triton_roi_align`: the Triton kernel. ``multi_level_roi_align_triton(features, rois, attrs)``
  for torch tensors (CUDA; CPU under ``TRITON_INTERPRET=1``), ``compile_ptx(attrs, dtype, cc)``
  for TensorRT (works with no GPU), ``launch_geometry`` / ``covered_output_indices``.

The TensorRT plugin around the kernel lives in the TensorRT layer (`trt.plugin`), ``evis plugins``
in `commands.plugins`.

Importing this package (or any module in it) never imports TensorRT, Triton or torch.
"""
