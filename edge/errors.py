"""The one exception family of edge-mer.

Every error a user can cause is an :class:`InputError` (exit code 2): its message is one
line that names the file, key or value and says how to fix it. Everything else that can
go wrong at run time is an :class:`EdgeMerError` (exit code 1). The CLI maps them to exit
codes; nothing else should catch them broadly.
"""

from __future__ import annotations


class EdgeMerError(Exception):
    """A failure edge-mer understands; the message is meant for the user."""

    exit_code = 1


class InputError(EdgeMerError):
    """Bad input: a file, a flag, a config key or a value the user gave us."""

    exit_code = 2


class CheckpointError(InputError):
    """A checkpoint that is missing, unreadable, unsafe or does not fit the model."""


class ModelProtocolError(InputError):
    """A user's model (factory) that does not follow the streaming model protocol."""


class DataError(InputError):
    """Clips, frames, videos or coding sheets that cannot be used."""


class BundleError(InputError):
    """A bundle that is missing files, has a bad manifest or fails its hash check."""


class MissingDependencyError(InputError):
    """An optional dependency this command needs is not installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs {package!r}, which is not installed: pip install 'edge-mer[{extra}]'"
        )


class VerificationError(EdgeMerError):
    """An exported graph does not compute what the PyTorch model computes."""


class NonFiniteError(InputError):
    """NaN or Inf in a model's outputs: the weights (or the input) are broken."""


class QuantizationError(EdgeMerError):
    """INT8 calibration could not reach the requested agreement with FP32."""


class EngineError(EdgeMerError):
    """A TensorRT engine that cannot be built, or cannot be loaded on this device."""


class CudaUnavailableError(EngineError):
    """No usable CUDA driver or device (no driver, one too old for the CUDA bindings, no GPU
    visible to this user): a runtime failure of this machine, not bad input."""
