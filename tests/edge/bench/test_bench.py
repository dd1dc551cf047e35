"""``edge-mer bench``: the library report and the command, on a tiny INT8 bundle built here."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from tests import REPO

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")

from edge_mer.bench.run import BenchOptions, run_bench, synthetic_windows  # noqa: E402
from edge_mer.bundle import Bundle  # noqa: E402
from edge_mer.cli.bench_cmd import bench  # noqa: E402
from edge_mer.convert.checkpoint import save_checkpoint  # noqa: E402
from edge_mer.convert.models import build  # noqa: E402
from edge_mer.convert.pipeline import ConvertOptions, convert  # noqa: E402
from edge_mer.errors import InputError  # noqa: E402
from tests.conftest import TINY  # noqa: E402

DOC = REPO / "docs" / "bench-json.md"
STAT_KEYS = ("count", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")
STAGES = ("capture", "face", "preprocess", "encoder", "step", "spotting", "capture_to_probs")
FAST = {"frames": 40, "warmup": 5, "chunks": 2, "streaming_rounds": 20}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    vids = root / "vids"
    vids.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        w = cv2.VideoWriter(str(vids / f"v{i}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 50, (48, 48))
        for _ in range(20):
            w.write(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
        w.release()
    torch.manual_seed(0)
    model = build(TINY)
    ckpt = root / "m.safetensors"
    save_checkpoint(model, ckpt, model.config)
    convert(ckpt, root / "bundle", ConvertOptions(int8=True, calib=vids))
    return root / "bundle"


@pytest.fixture(scope="module")
def windows(bundle: Path) -> tuple[np.ndarray, np.ndarray]:
    return synthetic_windows(Bundle.open(bundle), subjects=1, clips_per_emotion=1)


@pytest.fixture(scope="module")
def report(bundle: Path, windows) -> dict:
    opts = BenchOptions(precisions=("fp32", "int8"), min_agreement=0.5, **FAST)
    return run_bench(bundle, opts, windows=windows)


def _row(report: dict, runner: str, precision: str) -> dict:
    return next(r for r in report["runs"] if (r["runner"], r["precision"]) == (runner, precision))


def test_ort_rows_have_every_stage_fps_and_efficiency(report: dict) -> None:
    for precision in ("fp32", "int8"):
        row = _row(report, "onnxruntime", precision)
        assert row["status"] == "ok", row["reason"]
        assert 0.0 <= row["agreement"] <= 1.0 and row["size_bytes"] > 0
        for stage in STAGES:
            st = row["stages"][stage]
            assert all(st[k] is not None for k in STAT_KEYS), (stage, st)
            assert st["p50_ms"] <= st["p90_ms"] <= st["p95_ms"] <= st["p99_ms"] <= st["max_ms"]
            assert len(st["samples_ms"]) == st["count"]
        assert set(row["stages"]["end_to_end"]) >= set(STAT_KEYS)
        assert row["stages"]["capture"]["count"] == row["frames"] == FAST["frames"]
        assert row["fps"] > 0 and row["model_only_fps"] > 0 and row["dropped"] == 0
        assert 0.0 < row["efficiency"] <= 1.5
        assert len(row["timeline"]["t_s"]) == len(row["timeline"]["frame_ms"]) == row["frames"]
    # The reference agrees with itself exactly.
    assert _row(report, "onnxruntime", "fp32")["agreement"] == 1.0


def test_tensorrt_rows_are_unavailable_with_a_reason(report: dict) -> None:
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    for precision in ("fp32", "int8"):
        row = _row(report, "tensorrt", precision)
        assert row["status"] == "unavailable"
        assert "tensorrt" in row["reason"].lower()
        assert row["fps"] is None and "stages" not in row


def test_streaming_ratio_and_machine_facts(report: dict) -> None:
    st = report["streaming"]
    assert st["ratio_window_vs_streaming"] > 0
    assert st["streaming_ms_per_frame"] > 0 and st["window_ms_per_frame"] > 0
    assert st["stride1_vs_clip_max_abs"] < 1e-3  # the two paths compute the same logits
    m = report["machine"]
    assert m["cpu"] and m["cores"] >= 1 and m["versions"]["onnxruntime"] != "absent"
    if not Path("/etc/nv_tegra_release").exists():
        assert m["l4t"] == "absent" and m["jetpack"] == "absent"
    assert report["monitor"]["peak_rss_mib"] > 0
    assert report["primary"] == "onnxruntime/fp32"


def test_low_agreement_fails_the_accuracy_check(bundle: Path, windows, monkeypatch) -> None:
    import edge_mer.bench.run as bench_mod

    real = bench_mod._reference
    k = len(Bundle.open(bundle).labels)
    # A reference that disagrees with every prediction: the row runs but fails its check.
    monkeypatch.setattr(bench_mod, "_reference", lambda *a: (real(*a) + 1) % k)
    opts = BenchOptions(runners=("onnxruntime",), precisions=("int8",), **FAST)
    row = run_bench(bundle, opts, windows=windows)["runs"][0]
    assert row["status"] == "accuracy check failed"
    assert row["agreement"] == 0.0 and "agreement 0.000" in row["reason"]
    assert row["fps"] > 0  # it ran: speed is still reported


def test_missing_precision_is_a_row_not_a_crash(tmp_path: Path, bundle: Path, windows) -> None:
    fp32_only = tmp_path / "b"
    shutil.copytree(bundle, fp32_only)
    m = json.loads((fp32_only / "manifest.json").read_text())
    for k in [k for k in m["graphs"] if k.startswith("encoder_int8")]:
        del m["graphs"][k]
    m["targets"] = {k: "encoder" for k in m.get("targets", {})}
    (fp32_only / "manifest.json").write_text(json.dumps(m))
    opts = BenchOptions(runners=("onnxruntime",), precisions=("fp32", "int8"), **FAST)
    rep = run_bench(fp32_only, opts, windows=windows)
    row = _row(rep, "onnxruntime", "int8")
    assert row["status"] == "unavailable" and "convert --int8" in row["reason"]
    assert _row(rep, "onnxruntime", "fp32")["status"] == "ok"


def test_options_are_checked() -> None:
    for bad in (
        {"frames": 0},
        {"frames": -3},
        {"runners": ("tflite",)},
        {"precisions": ("fp8",)},
        {"frame_format": "rgb"},
        {"source": "synthetic://", "frame_format": "gray"},
    ):
        with pytest.raises(InputError):
            BenchOptions(**bad).check()


def test_the_replay_gives_a_gray_model_gray_frames(report: dict) -> None:
    # The tiny model is gray: the replayed stream is what picam:// and csi:// give it.
    assert report["bundle"]["input"]["channels"] == 1
    assert report["settings"]["frame_format"] == "auto"
    assert "format=gray" in report["settings"]["source"]


def test_rows_record_the_ort_threads_the_encoder_size_chose(report: dict) -> None:
    from edge_mer.bench.report import threads_line
    from edge_mer.runners.ort import SMALL_ENCODER_MACS

    macs = report["bundle"]["encoder_macs_per_frame"]
    assert 0 < macs < SMALL_ENCODER_MACS and report["settings"]["threads"] == 0
    for precision in ("fp32", "int8"):
        assert _row(report, "onnxruntime", precision)["threads"] == {"encoder": 1, "step": 1}
    line = threads_line(report)
    assert line.startswith("ONNX Runtime threads: encoder 1, step 1 (the encoder's ")
    assert f"{macs / 1e6:.1f} M MACs a frame, under 30 M; --threads N)" in line
    big = {**report, "bundle": {**report["bundle"], "encoder_macs_per_frame": 465_702_912}}
    for r in big["runs"]:
        if r.get("threads"):
            r["threads"] = {"encoder": 0, "step": 1}
    assert threads_line(big) == (
        "ONNX Runtime threads: encoder ORT's default (one per physical core), step 1 "
        "(the encoder's 465.7 M MACs a frame, not under 30 M; --threads N)"
    )
    assert threads_line({**big, "settings": {"threads": 2}}).endswith("step 1 (--threads)")
    assert threads_line({"runs": []}) == ""


# ---------------------------------------------------------------- the command


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False)
    app.command("bench")(bench)

    @app.callback()
    def _root() -> None:
        pass

    return app


def _doc_keys() -> list[str]:
    text = DOC.read_text()
    section = text.split("## Top-level keys", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^- `(\w+)`", section, re.M)


def _invoke(*args: str):
    return CliRunner().invoke(_app(), ["bench", *args])


def test_cli_writes_json_matching_the_doc_and_markdown(
    tmp_path: Path, bundle: Path, monkeypatch
) -> None:
    import edge_mer.bench.run as bench_mod

    small = bench_mod.synthetic_windows
    monkeypatch.setattr(
        bench_mod,
        "synthetic_windows",
        lambda b: small(b, subjects=1, clips_per_emotion=1),
    )
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    res = _invoke(
        str(bundle), "--frames", "30", "--warmup", "5", "--precisions", "fp32,int8",
        "--json", str(out), "--markdown", str(md),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    keys = _doc_keys()
    assert len(keys) >= 10
    assert list(report) == keys
    assert report["samples_kept"] is True
    assert "stage latency (ms): onnxruntime fp32" in res.output
    assert "replayed from memory, GRAY 128x128 frames" in res.output
    assert "ONNX Runtime threads: encoder 1, step 1 (the encoder's" in res.output
    assert "format=gray" in report["settings"]["source"]
    assert "ratio" in res.output and "tensorrt" in res.output
    text = md.read_text()
    assert "## Runners x precisions" in text and "| onnxruntime | int8 | ok |" in text
    assert "| capture_to_probs |" in text and "ratio" in text
    assert "ONNX Runtime threads: encoder 1, step 1" in text


def _one_line_error(res) -> str:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("edge-mer: error:"), res.output
    return lines[0]


def test_cli_bad_inputs_are_one_line(tmp_path: Path, bundle: Path) -> None:
    assert "--frames 0" in _one_line_error(_invoke(str(bundle), "--frames", "0"))
    assert "'rgb'" in _one_line_error(_invoke(str(bundle), "--frame-format", "rgb"))
    assert "drop one of them" in _one_line_error(
        _invoke(str(bundle), "--source", "synthetic://", "--frame-format", "bgr")
    )
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "cannot write" in _one_line_error(
        _invoke(str(bundle), "--json", str(blocker / "r.json"))
    )
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle, tampered)
    with open(tampered / "step.onnx", "ab") as f:
        f.write(b"\0")
    assert "hash check" in _one_line_error(_invoke(str(tampered), "--frames", "10"))


def test_cli_plot(tmp_path: Path, bundle: Path, monkeypatch) -> None:
    png = tmp_path / "p.png"
    if importlib.util.find_spec("matplotlib") is None:
        line = _one_line_error(_invoke(str(bundle), "--plot", str(png)))
        assert "matplotlib" in line and "plots" in line
        assert not png.exists()
        return
    import edge_mer.bench.run as bench_mod

    small = bench_mod.synthetic_windows
    monkeypatch.setattr(
        bench_mod, "synthetic_windows", lambda b: small(b, subjects=1, clips_per_emotion=1)
    )
    res = _invoke(
        str(bundle), "--frames", "20", "--warmup", "2", "--plot", str(png),
        "--frame-format", "bgr",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "replayed from memory, BGR 128x128 frames" in res.output


def test_tensorrt_without_a_cuda_driver_is_an_unavailable_row(
    bundle: Path, windows, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real cuda-python on a machine without a driver: the device probe fails (first
    run), or the probe passed and the runner's first CUDA call fails (second run)."""
    from edge_mer.bench import run as bench_run
    from edge_mer.runners import Selection
    from edge_mer.runners.cuda_runtime import NO_CUDA
    from edge_mer.runners.tensorrt.device import TrtVersion
    from edge_mer.runners.trt import TrtRunner
    from tests.edge.runners.test_cuda_runtime import driver_usable, fake_tensorrt
    from tests.edge.runners.test_runners import FakeBackend, FakeEngine, FakeTrt

    if driver_usable():
        pytest.skip("a CUDA driver and device are usable here")
    fake_tensorrt(monkeypatch)
    opts = BenchOptions(runners=("tensorrt",), precisions=("fp32",), **FAST)
    row = run_bench(bundle, opts, windows=windows)["runs"][0]
    assert row["status"] == "unavailable" and row["fps"] is None
    assert row["reason"].startswith(f"{NO_CUDA}: cudaGetDeviceProperties(0) ")

    real_select = bench_run.select_runner

    def select(bundle: Bundle, runner: str, **kw: Any) -> Selection:
        if runner != "tensorrt":
            return real_select(bundle, runner, **kw)

        def trt() -> TrtRunner:
            return TrtRunner(FakeEngine(FakeBackend(True)), TrtVersion(10, 3), FakeTrt, 16)

        return Selection(trt(), trt(), "tensorrt")

    monkeypatch.setattr(bench_run, "select_runner", select)
    row = run_bench(bundle, opts, windows=windows)["runs"][0]
    assert row["status"] == "unavailable"
    assert row["reason"].startswith(f"{NO_CUDA}: cudaSetDevice(0) ")
