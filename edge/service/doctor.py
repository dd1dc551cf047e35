"""``edge-mer doctor``: what this machine offers, and what each missing piece costs.

Every probe is read-only, has no side effects and never raises: a probe that fails
reports the failure as its finding. Results are plain dicts so the CLI and tests can
print or check them.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Finding:
    """One thing checked: ``ok`` None means "not applicable here"."""

    name: str
    ok: bool | None
    detail: str
    needed_for: str = ""
    fix: str = ""


def module_version(module: str) -> str | None:
    """A module's version; "broken (...)" if it is installed but fails to import; None if
    it is not installed."""
    if importlib.util.find_spec(module) is None:
        return None
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # an installed package that fails to import is a finding
        return f"broken ({type(exc).__name__}: {exc})"
    return str(getattr(mod, "__version__", "installed"))


def requirements(config: Any) -> list[tuple[str, str]]:
    """(module, what needs it) for a daemon config on this machine; ``("onnxruntime|tensorrt",
    ...)`` means either will do."""
    needs = [("cv2", "frame preprocessing (crop and resize)")]
    runner = config.model.runner
    if runner == "onnxruntime":
        needs.append(("onnxruntime", "model.runner = 'onnxruntime'"))
    elif runner == "tensorrt":
        needs.append(("tensorrt", "model.runner = 'tensorrt'"))
    else:
        needs.append(("onnxruntime|tensorrt", "model.runner = 'auto'"))
    if config.sinks.mqtt.host:
        needs.append(("paho", "sinks.mqtt.host"))
    if config.source.uri.startswith("picam:"):
        needs.append(("picamera2", f"source.uri = {config.source.uri!r}"))
    return needs


def check_requirements(config: Any) -> None:
    """Raise the one-line error for the first module ``config`` needs that is not
    installed here (``validate-config`` and ``install-service`` call it)."""
    from edge_mer.errors import installed, require

    for modules, why in requirements(config):
        options = modules.split("|")
        if not any(installed(m) for m in options):
            require(options[0], purpose=why)


def board_model(root: Path = Path("/")) -> str | None:
    """The device-tree model (Jetson, Raspberry Pi), None on a PC."""
    for rel in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        path = root / rel
        if path.is_file():
            return path.read_bytes().rstrip(b"\0").decode(errors="replace").strip()
    return None


def opencv_facts() -> dict[str, Any]:
    """cv2's version, GStreamer support and Haar availability."""
    if importlib.util.find_spec("cv2") is None:
        return {"version": None}
    try:
        import cv2
    except Exception as exc:
        return {"version": f"broken ({type(exc).__name__})"}
    from edge_mer.pipeline.camera import gstreamer_support

    gst = gstreamer_support(cv2)
    return {
        "version": cv2.__version__,
        "gstreamer": gst,
        "haar": hasattr(cv2, "CascadeClassifier"),
        "path": getattr(cv2, "__file__", ""),
    }


def cuda_finding() -> Finding:
    """cuda-python (asked for its devices, so a missing driver shows here), else pycuda."""
    from edge_mer.runners.cuda_runtime import cuda_status

    usable, detail, fix = cuda_status()
    if usable is None:
        pycuda = module_version("pycuda")
        usable, detail = bool(pycuda), f"pycuda {pycuda}" if pycuda else "not importable"
    return Finding("CUDA (cuda-python or pycuda)", usable, detail, "TensorRT buffers", fix)


def check(root: Path = Path("/")) -> list[Finding]:
    """All findings for this machine."""
    from edge_mer.runners.tensorrt.device import read_l4t_release

    out: list[Finding] = []
    model = board_model(root)
    out.append(Finding("board", None, model or f"{platform.machine()} (no device tree model)"))
    l4t = read_l4t_release(root / "etc/nv_tegra_release")
    if l4t or (model and "jetson" in model.lower()):
        out.append(Finding("JetPack / L4T", bool(l4t), l4t or "no /etc/nv_tegra_release"))
    out.append(Finding("python", True, platform.python_version()))
    np_v = module_version("numpy")
    out.append(
        Finding("numpy", np_v is not None, np_v or "missing", "everything", "pip install numpy")
    )
    ort = module_version("onnxruntime")
    detail = ort or "missing"
    if ort and not ort.startswith("broken"):
        import onnxruntime

        detail += " (" + ", ".join(onnxruntime.get_available_providers()) + ")"
    out.append(
        Finding(
            "onnxruntime",
            bool(ort),
            detail,
            "the ONNX Runtime runner (Pi, CPU)",
            "pip install 'edge-mer[pi]'",
        )
    )
    trt = module_version("tensorrt")
    out.append(
        Finding(
            "TensorRT",
            bool(trt),
            trt or "not importable",
            "build-engine and the TensorRT runner (Jetson)",
            "on a Jetson: JetPack's python3-libnvinfer, in a venv made with --system-site-packages",
        )
    )
    out.append(cuda_finding())
    out.append(frame_loop_finding())
    cv = opencv_facts()
    if cv["version"] is None:
        out.append(
            Finding(
                "OpenCV",
                False,
                "missing",
                "cameras, video files, face stage",
                "pip install 'edge-mer[pi]' (on a Jetson: JetPack's OpenCV)",
            )
        )
    else:
        out.append(Finding("OpenCV", True, f"{cv['version']} ({cv.get('path', '')})"))
        out.append(
            Finding(
                "OpenCV GStreamer",
                bool(cv.get("gstreamer")),
                "yes" if cv.get("gstreamer") else "no",
                "csi:// and gst:// sources",
                "use the distribution's OpenCV (apt python3-opencv / JetPack) in "
                "a --system-site-packages venv; pip's wheels have no GStreamer",
            )
        )
        out.append(
            Finding(
                "Haar face detector",
                bool(cv.get("haar")),
                "yes" if cv.get("haar") else "no (OpenCV 5)",
                "face.detector 'haar'",
                "pip install 'opencv-python-headless<5', or use yunet/roi/none",
            )
        )
    cams = sorted(glob.glob(str(root / "dev/video*")))
    out.append(
        Finding(
            "V4L2 cameras",
            bool(cams) or None,
            ", ".join(cams) or "none found",
            "v4l2:// sources",
            "plug a camera in; check the video group",
        )
    )
    pic = module_version("picamera2")
    if pic or (model and "raspberry" in model.lower()):
        out.append(
            Finding(
                "picamera2",
                bool(pic),
                pic or "not importable",
                "picam:// sources",
                "sudo apt install python3-picamera2; venv with --system-site-packages",
            )
        )
    torch = module_version("torch")
    out.append(
        Finding(
            "torch (host only)",
            None,
            torch or "not installed",
            "convert, train (not needed on the device)",
        )
    )
    return out


def frame_loop_finding() -> Finding:
    """Whether the frame loop's modules run compiled (mypyc, from a wheel) or as Python."""
    try:
        from edge_mer.native import describe

        detail = describe()
    except Exception as exc:  # a probe never raises
        return Finding("frame loop", False, f"cannot import it ({type(exc).__name__}: {exc})")
    if detail.startswith("pure Python"):
        return Finding(
            "frame loop",
            None,
            f"{detail}: the same results, more interpreter time per frame",
            "the lowest overhead per frame (small models, Raspberry Pi)",
            "reinstall with gcc and the Python headers present (mypyc compiles the frame "
            "loop: wheels, sdists, editable checkouts; make native in a checkout) and "
            "EDGE_MER_PURE unset",
        )
    return Finding("frame loop", True, detail)
