"""MultiLevelRoIAlign on every backend with no C++ to compile.

Importing this package never imports TensorRT or Triton; see `spec` for the operator
contract shared by the ONNX node, the Triton kernel and the TensorRT plugin.
"""
