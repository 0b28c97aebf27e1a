"""One clip loop over PyTorch, ONNX Runtime and TensorRT, carrying the tracklet state as named tensors."""
