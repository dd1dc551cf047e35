"""Machine facts and the run monitor: real readings here, fake sysfs trees for boards."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_mer.service.machine import (
    ABSENT,
    RunMonitor,
    clocks_locked,
    collect_facts,
    jetpack_of,
    power_rails,
)


def test_facts_here_never_claim_zero_for_missing_sources() -> None:
    facts = collect_facts()
    assert facts["cores"] >= 1 and facts["cpu"]
    for key in ("board", "l4t", "jetpack", "power_mode"):
        assert facts[key] == ABSENT or isinstance(facts[key], str)
    assert facts["versions"]["onnxruntime"] not in (ABSENT, "", 0)
    assert facts["versions"]["tensorrt"] == ABSENT  # not installable on this machine


def _jetson_root(tmp: Path) -> Path:
    (tmp / "proc/device-tree").mkdir(parents=True)
    (tmp / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin\0")
    (tmp / "etc").mkdir()
    (tmp / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.3, GCID: 1\n")
    for i in range(2):
        d = tmp / f"sys/devices/system/cpu/cpu{i}/cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_min_freq").write_text("2201600\n")
        (d / "scaling_max_freq").write_text("2201600\n")
    hw = tmp / "sys/class/hwmon/hwmon1"
    hw.mkdir(parents=True)
    (hw / "name").write_text("ina3221\n")
    (hw / "power1_input").write_text("5120000\n")
    (hw / "power1_label").write_text("VDD_IN\n")
    return tmp


def test_fake_jetson(tmp_path: Path) -> None:
    root = _jetson_root(tmp_path)
    facts = collect_facts(root)
    assert facts["board"] == "NVIDIA Jetson AGX Orin"
    assert facts["jetpack"] == "6.1/6.2"
    assert facts["clocks_locked"] is True
    assert power_rails(root) == {"VDD_IN": 5120.0}
    (root / "sys/devices/system/cpu/cpu1/cpufreq/scaling_min_freq").write_text("729600\n")
    assert clocks_locked(root) is False


def test_jetpack_table() -> None:
    assert jetpack_of("# R35 (release), REVISION: 4.1") == "5.1.x"
    assert jetpack_of("# R36 (release), REVISION: 3.0") == "6.0"
    assert jetpack_of(None) == ABSENT
    assert jetpack_of("# R99 (release), REVISION: 1.0") == ABSENT


def test_monitor_sees_cpu_and_memory_and_reports_absent_sensors(tmp_path: Path) -> None:
    with RunMonitor(interval_s=0.05, thermal_root=str(tmp_path), root=tmp_path) as mon:
        block = np.ones((2048, 2048))
        for _ in range(20):
            block = block @ block / 2048.0  # real work for the CPU counter
    s = mon.summary()
    assert s["samples"] >= 2 and s["cpu_percent"] > 0
    assert s["peak_rss_mib"] >= s["rss_start_mib"] > 0
    assert s["soc_temp_c_max"] == ABSENT and s["power_mw_mean"] == ABSENT
    assert s["throttling"] == ABSENT  # no vcgencmd here


def test_monitor_reads_a_thermal_zone(tmp_path: Path) -> None:
    zone = tmp_path / "thermal_zone0"
    zone.mkdir()
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("48312\n")
    with RunMonitor(interval_s=0.02, thermal_root=str(tmp_path), root=tmp_path) as mon:
        pass
    assert mon.summary()["soc_temp_c_max"] == 48.3
