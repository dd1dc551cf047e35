"""gst:// for real: Debian's GStreamer-enabled OpenCV (apt python3-opencv, numpy 1.x) in a
``--system-site-packages`` venv, the same arrangement as JetPack's OpenCV on a Jetson.

The venv is cached in ``.venv-gst/`` at the repository root (git-ignored) and rebuilt when
it no longer imports this checkout. Skips, with the reason, where /usr/bin/python3 has no
cv2 with GStreamer or no venv module (apt: python3-opencv gstreamer1.0-plugins-base
gstreamer1.0-plugins-good python3-venv).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import REPO

SYSTEM_PYTHON = Path("/usr/bin/python3")
VENV = REPO / ".venv-gst"
PIPELINE = "videotestsrc num-buffers=30 ! video/x-raw,format=BGR,width=64,height=48 ! appsink"

pytestmark = pytest.mark.gstreamer

CHECK_CV2 = (
    "import cv2, re, sys;"
    "sys.exit(0 if re.search(r'^\\s*GStreamer:\\s*YES', cv2.getBuildInformation(), re.M) else 3)"
)


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _system_gstreamer_reason() -> str | None:
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} not found"
    result = _run([str(SYSTEM_PYTHON), "-c", CHECK_CV2], timeout=60)
    if result.returncode == 3:
        return f"{SYSTEM_PYTHON}'s cv2 has no GStreamer"
    if result.returncode != 0:
        return f"{SYSTEM_PYTHON} cannot import cv2 (apt install python3-opencv)"
    if _run([str(SYSTEM_PYTHON), "-c", "import venv, ensurepip"], timeout=60).returncode:
        return f"{SYSTEM_PYTHON} has no venv/ensurepip (apt install python3-venv)"
    return None


def _venv_ok(python: Path) -> bool:
    probe = (
        "import os, edge_mer.pipeline.sources as s, cv2, numpy; print(os.path.realpath(s.__file__))"
    )
    if not python.exists():
        return False
    result = _run([str(python), "-c", probe], timeout=60)
    return result.returncode == 0 and str(REPO / "edge") in result.stdout


@pytest.fixture(scope="session")
def gst_python() -> Path:
    """A python with Debian's cv2 (GStreamer) and numpy 1.x that imports this checkout."""
    reason = _system_gstreamer_reason()
    if reason:
        pytest.skip(f"needs GStreamer-enabled OpenCV (Debian python3-opencv): {reason}")
    python = VENV / "bin" / "python"
    if _venv_ok(python):
        return python
    shutil.rmtree(VENV, ignore_errors=True)
    made = _run([str(SYSTEM_PYTHON), "-m", "venv", "--system-site-packages", str(VENV)])
    assert made.returncode == 0, made.stderr
    pip = _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(REPO)], 300)
    if pip.returncode != 0:
        # Offline, or Debian's setuptools too old for pyproject.toml: point a .pth at the core
        # (all gst:// needs) instead of failing on packaging.
        shim = VENV / "edge-mer-shim"
        shim.mkdir()
        (shim / "edge_mer").symlink_to(REPO / "edge", target_is_directory=True)
        site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
        (Path(site.stdout.strip()) / "edge_mer_shim.pth").write_text(f"{shim}\n")
    assert _venv_ok(python), f"the GStreamer venv cannot import edge_mer: {pip.stderr[-2000:]}"
    return python


SCRIPT = f"""
import sys, numpy
from edge_mer.pipeline.sources import open_source, make_source, SourceEnded
from edge_mer.pipeline.ring import CaptureThread
from edge_mer.pipeline.resample import FrameResampler

uri = "gst://{PIPELINE}"
frames = []
with open_source(uri) as source:
    assert not source.live, "num-buffers makes the pipeline finite"
    while True:
        try:
            frame = source.read(2.0)
        except SourceEnded:
            break
        assert frame is not None
        assert frame.image.shape == (48, 64, 3) and frame.image.dtype == numpy.uint8
        frames.append((frame.seq, frame.ts))
assert len(frames) == 30, len(frames)
assert [s for s, _ in frames] == list(range(30))
assert all(b[1] > a[1] for a, b in zip(frames, frames[1:]))

# The same pipeline through the capture thread and the ring, under numpy 1.x.
capture = CaptureThread(make_source(uri)).start()
seqs, resampler = [], FrameResampler(25)
while True:
    try:
        slot = capture.get(5.0)
    except SourceEnded:
        break
    assert slot is not None, "no frame within the deadline"
    seqs.append(slot.seq)
    resampler.push(slot.ts)
    capture.release(slot)
assert capture.stop(2.0)
stats = capture.stats()
assert stats.state == "ended" and stats.frames == 30, stats
assert len(seqs) + stats.drops == 30 and seqs == sorted(seqs), (seqs, stats)
print("ok numpy", numpy.__version__)
"""


def test_gst_uri_through_debian_opencv(gst_python: Path):
    result = _run([str(gst_python), "-c", SCRIPT], timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok numpy 1."), result.stdout  # JetPack-like numpy 1.x


def test_gst_pipeline_that_cannot_start(gst_python: Path):
    script = (
        "from edge_mer.pipeline.sources import open_source\n"
        "from edge_mer.errors import InputError\n"
        "try:\n"
        "    open_source('gst://filesrc location=/nonexistent.avi ! decodebin ! appsink')\n"
        "except InputError as exc:\n"
        "    print('refused:', exc)\n"
    )
    result = _run([str(gst_python), "-c", script], timeout=60)
    assert result.returncode == 0 and "refused:" in result.stdout, result.stdout + result.stderr


def test_main_venv_cv2_without_gstreamer_gives_one_line_fix():
    cv2 = pytest.importorskip("cv2")
    from edge_mer.errors import InputError
    from edge_mer.pipeline.camera import gstreamer_support
    from edge_mer.pipeline.sources import open_source

    if gstreamer_support(cv2):
        pytest.skip(f"{sys.executable}'s cv2 has GStreamer")
    with pytest.raises(InputError) as err:
        open_source(f"gst://{PIPELINE}")
    message = str(err.value)
    assert "has no GStreamer support" in message and "apt python3-opencv" in message
    assert "\n" not in message
