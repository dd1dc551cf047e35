"""``edge-mer doctor`` on this machine and on a fake Jetson root."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from edge_mer.cli import app
from edge_mer.service.doctor import board_model, check


def test_fake_jetson_root(tmp_path: Path) -> None:
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\0")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text(
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n"
    )
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/video0").write_text("")
    assert board_model(tmp_path) == "NVIDIA Jetson Orin Nano Developer Kit"
    found = {f.name: f for f in check(tmp_path)}
    assert found["JetPack / L4T"].ok and "36" in found["JetPack / L4T"].detail
    assert found["V4L2 cameras"].ok and found["V4L2 cameras"].detail.endswith("video0")


def test_pc_has_no_jetson_lines(tmp_path: Path) -> None:
    names = {f.name for f in check(tmp_path)}
    assert "JetPack / L4T" not in names and "board" in names and "onnxruntime" in names


def test_cli_json_and_text() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["doctor", "--json"])
    assert res.exit_code == 0
    findings = json.loads(res.stdout)
    assert {"name", "ok", "detail", "needed_for", "fix"} <= set(findings[0])
    res = runner.invoke(app, ["doctor"])
    assert res.exit_code == 0 and "onnxruntime" in res.stdout
    for f in findings:  # fixes such as "pip install 'edge-mer[jetson]'" are not eaten as markup
        if f["ok"] is False and f["fix"]:
            assert f["fix"] in res.stdout.replace("\n", " ").replace("  ", " ")


def test_cuda_finding_without_cuda_python(monkeypatch) -> None:
    import sys

    from edge_mer.service.doctor import cuda_finding

    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart", "pycuda"):
        monkeypatch.setitem(sys.modules, name, None)
    f = cuda_finding()
    assert f.ok is False and f.detail == "not importable" and "edge-mer[jetson]" in f.fix
