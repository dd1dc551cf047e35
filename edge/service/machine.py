"""Machine facts for reports, and a monitor that samples the machine during a run.

Every value that cannot be read here is the string ``"absent"``, never 0: a report must
not claim a board ran at 0 °C or drew 0 mW because the sensor was not there.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

ABSENT = "absent"

# L4T release -> JetPack (DESIGN reference table); unknown releases stay as L4T only.
_JETPACK = {
    "32.6": "4.6",
    "32.7": "4.6.x",
    "35": "5.1.x",
    "36.3": "6.0",
    "36.4": "6.1/6.2",
    "38": "7.x",
    "39": "7.x",
}


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _run(cmd: list[str], timeout: float = 2.0) -> str | None:
    """Output of a board tool (nvpmodel, vcgencmd), None when it is not installed or fails."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else None


def cpu_model(root: Path = Path("/")) -> str:
    text = _read(root / "proc/cpuinfo") or ""
    for key in ("model name", "Model", "Hardware"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, re.M)
        if m:
            return m.group(1).strip()
    return platform.processor() or platform.machine()


def jetpack_of(l4t: str | None) -> str:
    """The JetPack release an L4T release string (``R36 ... REVISION: 4.3``) belongs to."""
    if not l4t:
        return ABSENT
    m = re.search(r"R(\d+)\D+REVISION:\s*(\d+)", l4t) or re.search(r"(\d+)\.(\d+)", l4t)
    if not m:
        return ABSENT
    major, minor = m.group(1), m.group(2)
    return _JETPACK.get(f"{major}.{minor}", _JETPACK.get(major, ABSENT))


def clocks_locked(root: Path = Path("/")) -> bool | str:
    """True when every CPU's min and max scaling frequency are equal (jetson_clocks)."""
    cpus = sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq"))
    if not cpus:
        return ABSENT
    for cpu in cpus:
        lo, hi = _read(cpu / "scaling_min_freq"), _read(cpu / "scaling_max_freq")
        if lo is None or hi is None:
            return ABSENT
        if lo != hi:
            return False
    return True


def _version(module: str) -> str:
    from edge_mer.service.doctor import module_version

    return module_version(module) or ABSENT


def collect_facts(root: Path = Path("/")) -> dict[str, Any]:
    """CPU, cores, board, JetPack/L4T or OS release, power mode, clocks, library versions."""
    from edge_mer.runners.tensorrt.device import read_l4t_release
    from edge_mer.service.doctor import board_model

    l4t = read_l4t_release(root / "etc/nv_tegra_release")
    os_release = _read(root / "etc/os-release") or ""
    pretty = re.search(r'^PRETTY_NAME="?([^"\n]+)"?', os_release, re.M)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    power = _run(["nvpmodel", "-q"])
    cv = _version("cv2")
    try:
        from edge_mer.native import describe

        frame_loop = describe()
    except Exception as exc:  # facts never raise
        frame_loop = f"unknown ({type(exc).__name__})"
    return {
        "cpu": cpu_model(root),
        "arch": platform.machine(),
        "cores": os.cpu_count() or 0,
        "usable_cores": usable,
        "board": board_model(root) or ABSENT,
        "l4t": l4t or ABSENT,
        "jetpack": jetpack_of(l4t),
        "os_release": pretty.group(1) if pretty else ABSENT,
        "power_mode": power.splitlines()[0] if power else ABSENT,
        "clocks_locked": clocks_locked(root),
        "frame_loop": frame_loop,
        "versions": {
            "python": platform.python_version(),
            "numpy": _version("numpy"),
            "onnxruntime": _version("onnxruntime"),
            "tensorrt": _version("tensorrt"),
            "opencv": cv,
        },
    }


def rss_mib() -> float:
    """Resident memory of this process now (MiB)."""
    for line in (_read(Path("/proc/self/status")) or "").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def power_rails(root: Path = Path("/")) -> dict[str, float] | str:
    """Readable hwmon power inputs (Jetson INA3221 rails), label -> mW."""
    rails: dict[str, float] = {}
    for hw in sorted((root / "sys/class/hwmon").glob("hwmon*")):
        for p in sorted(hw.glob("power*_input")):
            value = _read(p)
            if value is None or not value.lstrip("-").isdigit():
                continue
            label = _read(p.with_name(p.name.replace("_input", "_label"))) or (
                f"{_read(hw / 'name') or hw.name}/{p.name}"
            )
            rails[label] = int(value) / 1000.0  # hwmon power is in microwatts
    return rails or ABSENT


def gpu_memory_mib() -> float | str:
    """Used GPU memory from nvidia-smi (discrete GPUs); a Jetson shares RAM: absent."""
    out = _run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"])
    if not out:
        return ABSENT
    try:
        return float(out.splitlines()[0])
    except ValueError:
        return ABSENT


def throttling() -> str:
    """A Raspberry Pi's ``vcgencmd get_throttled`` bits (``throttled=0x0``), else absent."""
    return _run(["vcgencmd", "get_throttled"]) or ABSENT


class RunMonitor:
    """Samples RSS, CPU time, SoC temperature and power rails every ``interval_s`` on a
    daemon thread while the ``with`` block runs; :meth:`summary` says what it saw."""

    def __init__(
        self,
        interval_s: float = 0.5,
        thermal_root: str = "/sys/class/thermal",
        root: Path = Path("/"),
    ) -> None:
        self.interval_s = interval_s
        self.thermal_root = thermal_root
        self.root = root
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rss: list[float] = []
        self.temps: list[float] = []
        self.power: list[float] = []
        self._wall0 = self._cpu0 = 0.0
        self._wall1 = self._cpu1 = 0.0
        self._throttled0 = ABSENT

    def __enter__(self) -> RunMonitor:
        self._wall0, self._cpu0 = time.monotonic(), time.process_time()
        self._throttled0 = throttling()
        self._thread = threading.Thread(target=self._loop, name="run-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.interval_s + 1)
        self._wall1, self._cpu1 = time.monotonic(), time.process_time()
        self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        from edge_mer.pipeline.telemetry import read_soc_temperature

        self.rss.append(rss_mib())
        temp = read_soc_temperature(self.thermal_root)
        if temp is not None:
            self.temps.append(temp)
        rails = power_rails(self.root)
        if isinstance(rails, dict):
            self.power.append(sum(rails.values()))

    def summary(self) -> dict[str, Any]:
        wall = max(1e-9, self._wall1 - self._wall0)
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        end = throttling()
        return {
            "seconds": round(wall, 3),
            "samples": len(self.rss),
            "rss_start_mib": round(self.rss[0], 1) if self.rss else ABSENT,
            "rss_end_mib": round(self.rss[-1], 1) if self.rss else ABSENT,
            "peak_rss_mib": round(peak_kib / 1024, 1),
            "cpu_percent": round(100.0 * (self._cpu1 - self._cpu0) / wall, 1),
            "soc_temp_c_max": round(max(self.temps), 1) if self.temps else ABSENT,
            "power_mw_mean": round(sum(self.power) / len(self.power), 1) if self.power else ABSENT,
            "gpu_mem_mib": gpu_memory_mib(),
            "throttling": ABSENT if end == ABSENT else {"start": self._throttled0, "end": end},
        }
