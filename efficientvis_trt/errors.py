"""One exception type for user-facing failures.

The CLI turns an `EvisError` into one line on stderr and a non-zero exit, never a
traceback. Raise it for bad input (files, shapes, versions, precisions); let real
bugs raise anything else.
"""


class EvisError(Exception):
    """A failure the user can fix; its message is the whole story, in one line."""

    exit_code = 2


class BackendUnavailable(EvisError):
    """An optional backend (TensorRT, CUDA, Triton, onnxruntime-gpu) is not installed or usable."""

    exit_code = 3
