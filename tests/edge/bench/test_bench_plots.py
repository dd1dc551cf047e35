"""The bench report's PNG: drawn from a synthetic report, atomically, matplotlib optional."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_mer.bench.plots import plot_report, require_matplotlib
from edge_mer.errors import InputError, MissingDependencyError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _stage(samples: np.ndarray, keep_samples: bool = True) -> dict:
    st = {
        "count": int(samples.size),
        "mean_ms": float(samples.mean()),
        **{f"p{q}_ms": float(np.percentile(samples, q)) for q in (50, 90, 95, 99)},
        "max_ms": float(samples.max()),
    }
    if keep_samples:
        st["samples_ms"] = samples.tolist()
    return st


def _report(n: int = 400) -> dict:
    rng = np.random.default_rng(0)
    runs = []
    for runner, scale in (("ort", 1.0), ("trt", 0.4)):
        pre = rng.gamma(4.0, 0.25, n) * scale
        enc = rng.gamma(6.0, 1.5, n) * scale * np.linspace(1.0, 1.5, n)  # throttling
        enc[::97] += 40.0  # GC pauses
        frame = pre + enc
        runs.append(
            {
                "runner": runner,
                "precision": "fp16" if runner == "trt" else "fp32",
                "status": "ok",
                "stages": {"preprocess": _stage(pre), "encoder": _stage(enc)},
                "timeline": {
                    "t_s": (100.0 + np.arange(n) / 30.0).tolist(),
                    "frame_ms": frame.tolist(),
                },
            }
        )
    runs.append({"runner": "tflite", "precision": "int8", "status": "unavailable"})
    return {
        "bundle": {"name": "casme2-demo"},
        "machine": {"cpu": "Cortex-A76"},
        "runs": runs,
    }


def _read_png(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return imread(path)


def test_report_draws_one_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "bench.png"
    assert plot_report(_report(), out) == out
    img = _read_png(out)
    height, width = img.shape[:2]
    assert 600 <= height <= 2000 and 800 <= width <= 3000
    assert img[..., :3].std() > 0.05  # something was drawn, not a blank canvas
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.png"]  # no temp file left


def test_summary_only_rows_without_timeline_and_bare_report(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = _report(n=50)
    for run in report["runs"][:2]:
        del run["timeline"]
        for st in run["stages"].values():
            del st["samples_ms"]
    report["runs"][0]["stages"]["encoder"]["samples_ms"] = list(range(1, 51))
    del report["bundle"], report["machine"]
    out = plot_report(report, tmp_path / "summary.png")
    assert _read_png(out).shape[0] >= 600


def test_seconds_and_frame_index_rows_mix(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = _report(n=3)  # too short for a rolling median
    del report["runs"][1]["timeline"]["t_s"]
    report["runs"][0]["stages"]["preprocess"]["samples_ms"] = [0.0, float("nan"), 0.2]
    assert plot_report(report, tmp_path / "p.png").stat().st_size > 1000


def test_existing_file_is_replaced(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "bench.png"
    out.write_bytes(b"old")
    plot_report(_report(n=60), out)
    assert out.read_bytes()[:8] == PNG_SIGNATURE


def test_nothing_to_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = _report()
    report["runs"] = [
        report["runs"][2],
        {"runner": "ort", "precision": "int8", "status": "failed"},
        {"runner": "trt", "precision": "int8", "status": "failed", "stages": {}, "timeline": {}},
        {
            "runner": "ort",
            "precision": "fp16",
            "status": "accuracy failed",
            "stages": {"encoder": {"count": 0, "p50_ms": None, "samples_ms": []}},
            "timeline": {"t_s": [], "frame_ms": []},
        },
    ]
    with pytest.raises(InputError, match="nothing to plot: no run produced timings"):
        plot_report(report, tmp_path / "x.png")
    with pytest.raises(InputError, match="nothing to plot"):
        plot_report({}, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("where", ["missing-folder", "under-a-file", "is-a-folder"])
def test_unwritable_destination_names_the_path(tmp_path: Path, where: str) -> None:
    pytest.importorskip("matplotlib")
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder.png").mkdir()
    out = {
        "missing-folder": tmp_path / "nope" / "bench.png",
        "under-a-file": tmp_path / "file" / "bench.png",
        "is-a-folder": tmp_path / "folder.png",
    }[where]
    with pytest.raises(InputError, match="cannot write the plot") as err:
        plot_report(_report(n=20), out)
    assert str(out) in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder.png"]


def test_missing_matplotlib_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match="plots") as err:
        plot_report(_report(n=10), Path("never-written.png"))
    assert "matplotlib" in str(err.value) and "--plot" in str(err.value)
    with pytest.raises(MissingDependencyError):
        require_matplotlib()
    assert not Path("never-written.png").exists()


def test_import_does_not_load_matplotlib() -> None:
    code = (
        "import sys, edge_mer.bench.plots\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] == 'matplotlib']\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
