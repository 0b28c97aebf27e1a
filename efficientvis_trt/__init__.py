"""EfficientVIS-TRT: EfficientVIS video instance segmentation from PyTorch to TensorRT.

Heavy optional backends (tensorrt, onnxruntime, triton) are imported lazily by the
modules that need them, so every part of the package imports without the others.
"""

__version__ = "0.1.0"
