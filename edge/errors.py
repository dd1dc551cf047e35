"""The one exception family of edge-mer.

Every error a user can cause is an :class:`InputError` (exit code 2): its message is one
line that names the file, key or value and says how to fix it. Everything else that can
go wrong at run time is an :class:`EdgeMerError` (exit code 1). The CLI maps them to exit
codes; nothing else should catch them broadly.
"""

from __future__ import annotations

import importlib.util


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


#: Optional top-level modules -> (what to install, the extra that brings it on a device,
#: the extra that brings it on a host). None: not from pip (TensorRT comes with JetPack).
OPTIONAL_DEPENDENCIES: dict[str, tuple[str, str | None, str | None]] = {
    "torch": ("torch", None, "convert"),
    "onnx": ("onnx", None, "convert"),
    "onnxscript": ("onnxscript", None, "convert"),
    "safetensors": ("safetensors", None, "convert"),
    "openpyxl": ("openpyxl", None, "convert"),
    "onnxruntime": ("onnxruntime", "cpu", "convert"),
    "cv2": ("opencv-python-headless", "cpu", "convert"),
    "paho": ("paho-mqtt", "mqtt", "mqtt"),
    "matplotlib": ("matplotlib", "plots", "plots"),
    "cuda": ("cuda-python", "jetson", "jetson"),
    "pycuda": ("cuda-python", "jetson", "jetson"),
    "tensorrt": ("tensorrt", None, None),
    "picamera2": ("picamera2", None, None),
}


def missing_dependency(exc: ImportError, purpose: str, *, host: bool) -> InputError | None:
    """The one-line error for an optional module that is not installed (None when
    ``exc`` is not about one: a base dependency missing is a broken install, not input).

    ``host``: the command runs on the host (synth, train, convert), where the
    ``[convert]`` extra brings the device's modules too.
    """
    name = (getattr(exc, "name", None) or "").partition(".")[0]
    if not isinstance(exc, ModuleNotFoundError) or name not in OPTIONAL_DEPENDENCIES:
        return None
    package, device_extra, host_extra = OPTIONAL_DEPENDENCIES[name]
    extra = host_extra if host else device_extra or host_extra
    if name == "tensorrt":
        return InputError(
            f"{purpose} needs TensorRT, which is not importable here: on a Jetson it comes "
            "with JetPack (sudo apt install python3-libnvinfer; a venv made with "
            "--system-site-packages sees it)"
        )
    if name == "picamera2":
        return InputError(
            f"{purpose} needs picamera2: sudo apt install python3-picamera2 (Raspberry Pi OS), "
            "in a venv made with --system-site-packages"
        )
    if extra is None:  # pragma: no cover - every pip module above has an extra
        return InputError(f"{purpose} needs {package!r}, which is not installed")
    return MissingDependencyError(package, extra, purpose)


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here (found, not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that fails, or a None in sys.modules
        return False


def require(*modules: str, purpose: str, host: bool = False) -> None:
    """Raise the one-line error (:func:`missing_dependency`) for the first of ``modules``
    that is not installed: a command checks what it needs before it starts working."""
    for module in modules:
        if not installed(module):
            error = missing_dependency(ModuleNotFoundError(name=module), purpose, host=host)
            raise error or InputError(f"{purpose} needs {module!r}, which is not installed")


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
