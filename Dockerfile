# x86_64 + NVIDIA GPU (CUDA 13 driver, 580+). NVIDIA's PyTorch container brings torch, CUDA 13 and Python 3.12;
# this adds TensorRT, cuda-python 13 and onnxruntime-gpu with the same lines CI resolves (.ci/targets.py):
# deploy/requirements/$TARGET.txt. CUDA 12 driver: --build-arg TARGET=x86-cu12 on a CUDA 12 base
# (e.g. --build-arg BASE=nvcr.io/nvidia/pytorch:25.01-py3). Steps and alternatives: docs/deploy.md.
#   docker build -t evis .
#   docker run --rm --gpus all evis evis doctor
ARG BASE=nvcr.io/nvidia/pytorch:25.11-py3
FROM ${BASE}
ARG TARGET=x86-cu13
WORKDIR /opt/efficientvis-trt
COPY . .
# The container's own pip constraints (NGC sets PIP_CONSTRAINT) keep its torch; ours never replaces it either.
RUN python3 -m pip install --no-cache-dir -r deploy/requirements/${TARGET}.txt \
 && evis --version
CMD ["evis", "doctor"]
