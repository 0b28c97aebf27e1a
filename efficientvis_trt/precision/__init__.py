"""Precision builds: fp16 and int8 ONNX graphs (ONNX Runtime), TensorRT engines, calibration.

Modules: `fp16` (float16 conversion with block list and overflow guard), `int8` (explicit
Q/DQ post-training quantization), `data` (calibration clips with carried state),
`graph` (which nodes are heads, softmax, RoIAlign, box decoding), `engine` (TensorRT
build/load, engine naming), `cli` (`evis build`). Heavy imports stay inside functions.
"""
