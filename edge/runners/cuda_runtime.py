"""The CUDA runtime through cuda-python, and what a failed call means for the user.

cuda-python's runtime bindings return a tuple for every call: ``(cudaError_t,)`` or
``(cudaError_t, value)`` (``cudaHostAlloc`` -> ``(err, host pointer int)``,
``cudaStreamCreate`` -> ``(err, cudaStream_t)``); they raise only on arguments of the wrong
type. :func:`check` unpacks that tuple. When the machine has no usable driver or device
(no libcuda, a driver older than the CUDA the bindings were built for, no GPU visible to this
user), it raises :class:`~edge_mer.errors.CudaUnavailableError`: one line that starts with
:data:`NO_CUDA`, says which call failed with which error, and what to do. Other failures are
:class:`~edge_mer.errors.EngineError`.

Checked against cuda-python 12.9 and 13.4 (``cuda.bindings.runtime``; ``cuda.cudart`` before
12.6) on a machine without a driver, where every call returns ``cudaErrorInsufficientDriver``;
see docs/engines.md. ``cuda`` is imported lazily.
"""

from __future__ import annotations

import logging
from typing import Any

from edge_mer.errors import CudaUnavailableError, EngineError

log = logging.getLogger(__name__)

NO_CUDA = "no usable CUDA driver/device"

# Errors that mean "this machine cannot run CUDA now", not "this call was wrong".
DRIVER_ERRORS = frozenset(
    {
        "cudaErrorInitializationError",
        "cudaErrorStubLibrary",
        "cudaErrorInsufficientDriver",
        "cudaErrorCallRequiresNewerDriver",
        "cudaErrorDevicesUnavailable",
        "cudaErrorNoDevice",
        "cudaErrorInvalidDevice",
        "cudaErrorSystemNotReady",
        "cudaErrorSystemDriverMismatch",
        "cudaErrorCompatNotSupportedOnDevice",
    }
)


def import_cudart() -> Any | None:
    """cuda-python's runtime module: ``cuda.bindings.runtime`` (12.6 and later, 13.x), else
    ``cuda.cudart`` (11.x to 12.5); None when cuda-python is not installed."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            return None
    return runtime


def bindings_version() -> str:
    """The installed cuda-python bindings' version (``cuda-bindings``, else ``cuda-python``)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("cuda-bindings", "cuda-python"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def error_text(rt: Any, err: Any) -> str:
    """``cudaErrorInsufficientDriver (CUDA driver version is insufficient ...)``."""
    name = getattr(err, "name", None) or str(err)
    try:
        ok, text = rt.cudaGetErrorString(err)
        text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    except Exception:  # the description is a courtesy; the name is what matters
        return name
    return f"{name} ({text})" if ok == rt.cudaError_t.cudaSuccess and text else name


def driver_hint(rt: Any) -> str:
    """What to do, from the driver's and the bindings' CUDA versions."""
    try:
        _, driver = rt.cudaDriverGetVersion()
        _, runtime = rt.cudaRuntimeGetVersion()
    except Exception:
        driver = runtime = 0
    built = f"cuda-python {bindings_version()}" + (
        f" (CUDA {_cuda_version(runtime)})" if runtime else ""
    )
    if not driver:
        return (
            f"no NVIDIA driver is loaded (libcuda), {built} needs one: run on the Jetson or "
            "a machine with an NVIDIA GPU and its driver"
        )
    if runtime and driver // 1000 < runtime // 1000:
        major = driver // 1000
        return (
            f"the driver supports CUDA {_cuda_version(driver)}, older than {built}: install "
            f"bindings for this driver: pip install 'cuda-python>={major},<{major + 1}'"
        )
    return (
        f"driver CUDA {_cuda_version(driver)}, {built}: is the GPU visible to this user "
        "(group 'video' on a Jetson, /dev/nvidia* or /dev/nvhost*)?"
    )


def check(rt: Any, result: Any, what: str) -> Any:
    """The value(s) of a cuda-python call's ``(err, *values)`` result.

    Returns the one value, a list of several, or ``[]`` for calls that return only ``err``.

    Raises:
        CudaUnavailableError: no usable driver/device (see :data:`DRIVER_ERRORS`).
        EngineError: any other CUDA error.
    """
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != rt.cudaError_t.cudaSuccess:
        name = getattr(err, "name", str(err))
        if name in DRIVER_ERRORS:
            raise CudaUnavailableError(
                f"{NO_CUDA}: {what} returned {error_text(rt, err)}; {driver_hint(rt)}"
            )
        raise EngineError(f"CUDA {what} failed: {error_text(rt, err)}")
    return values[0] if len(values) == 1 else values


def call(rt: Any, fn: str, *args: Any, what: str | None = None) -> Any:
    """``rt.<fn>(*args)``, its result unpacked by :func:`check`.

    cuda-python before 12.6 raises ``RuntimeError: Failed to dlopen libcuda.so.1`` instead
    of returning an error when there is no driver: the same CudaUnavailableError.
    """
    what = what or fn
    try:
        result = getattr(rt, fn)(*args)
    except RuntimeError as exc:
        raise CudaUnavailableError(f"{NO_CUDA}: {what} failed: {exc}; {driver_hint(rt)}") from None
    return check(rt, result, what)


def call_quietly(rt: Any, fn: str, *args: Any) -> None:
    """:func:`call` for releases: a failure is logged, never raised (the error that caused
    the release is the one the user needs to see)."""
    try:
        call(rt, fn, *args)
    except EngineError as exc:
        log.warning("%s", exc)


def pycuda_unavailable(exc: Exception, what: str) -> CudaUnavailableError:
    """pycuda's ``cuInit``/device errors as the same one line."""
    return CudaUnavailableError(
        f"{NO_CUDA}: pycuda {what} failed ({str(exc).strip() or type(exc).__name__}): run on "
        "the Jetson or a machine with an NVIDIA GPU and its driver, as a user in group 'video'"
    )


def cuda_status() -> tuple[bool | None, str, str]:
    """For ``edge-mer doctor``: (usable?, what was found, what to do); usable is None when no
    CUDA bindings are installed. Never raises."""
    rt = import_cudart()
    if rt is None:
        return None, "cuda-python is not installed", "pip install 'edge-mer[jetson]'"
    name = f"cuda-python {bindings_version()}"
    try:
        count = call(rt, "cudaGetDeviceCount", what="cudaGetDeviceCount()")
    except CudaUnavailableError as exc:
        found, _, hint = str(exc).rpartition("; ")
        return False, f"{name}: {found}", hint
    except Exception as exc:  # a broken install is a finding, not a crash
        return False, f"{name}: {type(exc).__name__}: {exc}", "reinstall cuda-python"
    if not count:
        return False, f"{name}: {NO_CUDA}: the driver reports no device", driver_hint(rt)
    return True, f"{name}, {count} device(s)", ""
