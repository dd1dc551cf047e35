"""TensorRT versions and device facts: what an engine is tied to (DESIGN §3).

Plain Python: version parsing and the API predicates per version, and the facts of this
device (TensorRT version, GPU compute capability, L4T release). Engine names and build plans
live in :mod:`edge_mer.runners.tensorrt.plan`, the sidecar checks in
:mod:`~edge_mer.runners.tensorrt.check`, the TensorRT calls in
:mod:`~edge_mer.runners.tensorrt.build`. ``tensorrt`` and the CUDA bindings are imported
lazily, only by :func:`import_tensorrt` and :func:`gather_device_facts`. Engines are
executable artifacts: load only what was built here (or came over an authenticated channel),
from a directory only root can write.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_mer.errors import EngineError, InputError, MissingDependencyError

ENGINES_DIR = "engines"
PRECISIONS = ("int8", "fp16", "fp32")
ROLES = ("encoder", "step", "clip")
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEFAULT_WORKSPACE_MIB = 256
DEFAULT_MAX_BATCH = 8

TENSORRT_MISSING = (
    "building engines needs TensorRT, which is not importable here: on a Jetson it comes "
    "with JetPack (python3-libnvinfer); engines must be built on the device that runs them"
)


class TensorRTMissingError(MissingDependencyError):
    """``import tensorrt`` failed: exit code 2, one line, no pip advice (JetPack ships it)."""

    def __init__(self, message: str = TENSORRT_MISSING) -> None:
        InputError.__init__(self, message)


# --------------------------------------------------------------------------- versions


@dataclass(frozen=True, order=True)
class TrtVersion:
    """A TensorRT version and what its Python API offers.

    The predicates encode the API differences edge-mer depends on; docs/engines.md says which
    TensorRT documentation each one was checked against.
    """

    major: int
    minor: int
    patch: int = 0
    build: int = 0

    @classmethod
    def parse(cls, text: str) -> TrtVersion:
        """Parse ``"8.5.2.2"``, ``"10.3.0"``, ``"10.13"``, ``"11.4.1"`` (suffixes like ``.post1``
        or ``+cuda12`` are ignored)."""
        m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(text))
        if not m:
            raise EngineError(f"cannot read a TensorRT version from {text!r}")
        major, minor, patch, build = (int(g) if g else 0 for g in m.groups())
        return cls(major, minor, patch, build)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def supported(self) -> bool:
        """8.0+: ``build_serialized_network`` and Q/DQ explicit quantization exist."""
        return self.major >= 8

    @property
    def named_tensors(self) -> bool:
        """8.5+: ``num_io_tensors``/``get_tensor_name``/``set_input_shape``/
        ``set_tensor_address``/``execute_async_v3``. Before 8.5 only the binding API."""
        return (self.major, self.minor) >= (8, 5)

    @property
    def binding_api(self) -> bool:
        """< 10: ``num_bindings``/``execute_async_v2`` (deprecated in 8.5, removed in 10.0)."""
        return self.major < 10

    @property
    def explicit_batch_flag_needed(self) -> bool:
        """8.x: ONNX networks need ``EXPLICIT_BATCH``; 10.x ignores it, 11.x removed it."""
        return self.major < 10

    @property
    def strongly_typed_available(self) -> bool:
        """10.x+: ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` exists (9.x never shipped
        on Jetson)."""
        return self.major >= 10

    @property
    def strongly_typed_only(self) -> bool:
        """11.x+: every network is strongly typed; precision builder flags are gone."""
        return self.major >= 11

    @property
    def int8_flag(self) -> bool:
        """8.x-10.x: ``BuilderFlag.INT8`` with a Q/DQ ONNX; 11.x: INT8 comes from Q/DQ alone."""
        return self.supported and not self.strongly_typed_only

    @property
    def fp16_flag(self) -> bool:
        """< 11: ``BuilderFlag.FP16``; 11.x removed it (FP16 must be in the graph's types)."""
        return self.supported and not self.strongly_typed_only

    @property
    def memory_pool_api(self) -> bool:
        """8.4+: ``set_memory_pool_limit(MemoryPoolType.WORKSPACE, n)``; before:
        ``max_workspace_size`` (deprecated 8.4, removed 10.0)."""
        return (self.major, self.minor) >= (8, 4)


def network_flag_names(version: TrtVersion) -> tuple[str, ...]:
    """``NetworkDefinitionCreationFlag`` members that
    :func:`~edge_mer.runners.tensorrt.build.build_engine` sets.

    8.x: EXPLICIT_BATCH (required for ONNX). 10.x: none, the network is weakly typed so the
    INT8/FP16 builder flags apply. 11.x: STRONGLY_TYPED (deprecated and ignored in 11.0,
    strong typing is always on; set only where the enum still has it, to state the intent).
    """
    if version.explicit_batch_flag_needed:
        return ("EXPLICIT_BATCH",)
    if version.strongly_typed_only:
        return ("STRONGLY_TYPED",)
    return ()


# --------------------------------------------------------------------------- device facts


@dataclass(frozen=True)
class DeviceFacts:
    """What an engine is tied to: TensorRT version and GPU; L4T release for the record."""

    trt_version: TrtVersion
    compute_capability: tuple[int, int]
    gpu_name: str
    l4t_release: str | None = None

    @property
    def sm(self) -> str:
        """Compute capability as in ``sm87``'s digits: ``"87"``."""
        return f"{self.compute_capability[0]}{self.compute_capability[1]}"


def parse_l4t_release(text: str) -> str | None:
    """``# R35 (release), REVISION: 4.1, ...`` (``/etc/nv_tegra_release``) -> ``"R35.4.1"``."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)", text)
    return f"R{m.group(1)}.{m.group(2).rstrip('.')}" if m else None


def read_l4t_release(path: Path = TEGRA_RELEASE) -> str | None:
    """The L4T release of this Jetson, or None off-Jetson or when unreadable."""
    try:
        return parse_l4t_release(path.read_text(errors="replace"))
    except OSError:
        return None


def import_tensorrt() -> Any:
    """``import tensorrt``, or :class:`TensorRTMissingError` (exit code 2)."""
    try:
        import tensorrt  # optional: comes with JetPack, not from pip
    except ImportError:
        raise TensorRTMissingError() from None
    return tensorrt


def probe_cuda_device(index: int = 0) -> tuple[tuple[int, int], str]:
    """Compute capability and name of CUDA device ``index`` via cuda-python, else pycuda.

    Raises:
        CudaUnavailableError: no usable CUDA driver/device (exit code 1).
        MissingDependencyError: neither cuda-python nor pycuda is installed (exit code 2).
    """
    from edge_mer.runners.cuda_runtime import call, import_cudart, pycuda_unavailable

    cudart = import_cudart()
    if cudart is not None:
        what = f"cudaGetDeviceProperties({index})"
        prop = call(cudart, "cudaGetDeviceProperties", index, what=what)
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else prop.name
        return (int(prop.major), int(prop.minor)), name.rstrip("\x00").strip()
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise MissingDependencyError(
            "cuda-python", "jetson", "reading the GPU's compute capability"
        ) from None
    try:
        cuda.init()
        dev = cuda.Device(index)
        major, minor = dev.compute_capability()
        name = str(dev.name())
    except getattr(cuda, "Error", RuntimeError) as exc:
        raise pycuda_unavailable(exc, f"Device({index})") from None
    return (int(major), int(minor)), name


def gather_device_facts(
    trt: Any | None = None,
    cuda_probe: Callable[[], tuple[tuple[int, int], str]] | None = None,
    tegra_release: Path = TEGRA_RELEASE,
) -> DeviceFacts:
    """Facts about this device. ``trt`` and ``cuda_probe`` are injectable for tests.

    Raises:
        TensorRTMissingError: tensorrt is not importable (exit code 2).
        EngineError: the TensorRT version is older than 8.0.
        CudaUnavailableError: no usable CUDA driver/device (:func:`probe_cuda_device`).
    """
    trt = trt if trt is not None else import_tensorrt()
    version = TrtVersion.parse(getattr(trt, "__version__", ""))
    if not version.supported:
        raise EngineError(
            f"TensorRT {version} is too old: edge-mer needs 8.0 or newer "
            "(JetPack 4.6+) for Q/DQ INT8 and serialized builds"
        )
    cc, name = (cuda_probe or probe_cuda_device)()
    return DeviceFacts(version, cc, name, read_l4t_release(tegra_release))
