"""``convert`` end to end on real video files: bundle, INT8, fallback, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from edge_mer.bundle import Bundle  # noqa: E402
from edge_mer.convert.checkpoint import save_checkpoint  # noqa: E402
from edge_mer.convert.models import build  # noqa: E402
from edge_mer.convert.pipeline import ConvertOptions, convert  # noqa: E402
from edge_mer.convert.quantize import zero_points  # noqa: E402
from edge_mer.errors import (  # noqa: E402
    BundleError,
    DataError,
    InputError,
    NonFiniteError,
    QuantizationError,
)
from tests.conftest import TINY  # noqa: E402


def write_videos(folder: Path, n: int, frames: int = 24, fps: int = 50, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        writer = cv2.VideoWriter(
            str(folder / f"v{i}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), fps, (48, 48)
        )
        for _ in range(frames):
            writer.write(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
        writer.release()
    return folder


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return write_videos(tmp_path_factory.mktemp("calib") / "vids", 8)


def _checkpoint(tmp_path: Path, sharpen: bool = False) -> Path:
    torch.manual_seed(0)
    model = build(TINY)
    if sharpen:
        # One activation channel 10000x the others and a steep head: per-tensor INT8
        # activations lose the small channels, and the argmax flips on some windows
        # (3000x was enough until the gray crops were converted before being resized: on
        # the new pixels all held-out windows kept their argmax).
        with torch.no_grad():
            model.cnn[0][0].weight[0] *= 10000.0
            model.head.weight *= 40.0
            model.head.bias.zero_()
            model.cnn[-1].weight *= 20.0
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path, model.config)
    return path


def test_int8_bundle_is_complete_verified_and_hashed(tmp_path: Path, videos: Path) -> None:
    out = tmp_path / "bundle"
    manifest = convert(_checkpoint(tmp_path), out, ConvertOptions(int8=True, calib=videos))
    bundle = Bundle.open(out)
    assert bundle.manifest == json.loads((out / "manifest.json").read_text())
    assert set(manifest["graphs"]) >= {"encoder", "step", "clip", "encoder_int8"}
    assert bundle.states[0].name == "h" and bundle.states[0].shape == (1, 16)
    v = manifest["verification"]
    assert v["fp32"]["max_abs_pytorch_vs_onnx"] < 1e-4
    assert v["fp32"]["max_abs_streaming_vs_clip"] < 1e-4
    assert v["fp32"]["calibration_windows"] > 0
    assert v["int8"]["top1_agreement"] >= 0.98
    assert v["int8"]["held_out_windows"] > 0
    zps = zero_points(out / "encoder.int8.onnx")
    assert zps and all(np.all(z == 0) for z in zps)
    # Signed int8 activations and weights (int32 only for biases): no uint8 anywhere.
    assert {z.dtype for z in zps} <= {np.dtype(np.int8), np.dtype(np.int32)}
    assert np.dtype(np.int8) in {z.dtype for z in zps}
    assert manifest["calibration"]["held_out_clips"] == 2
    assert manifest["calibration"]["calibration_clips"] == 6
    assert manifest["targets"]["tensorrt"] == "encoder_int8"
    assert manifest["versions"]["opset"] == "17"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    # A changed file fails the hash check.
    with open(out / "step.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match=r"step.onnx.*fails its hash check"):
        Bundle.open(out)


def test_sensitive_layers_stay_float_until_target_met(tmp_path: Path, videos: Path) -> None:
    opts = ConvertOptions(int8=True, calib=videos, min_agreement=1.0, calib_method="minmax")
    manifest = convert(_checkpoint(tmp_path, sharpen=True), tmp_path / "b", opts)
    q = manifest["verification"]["int8"]
    assert q["top1_agreement"] == 1.0
    assert q["float_layers"], "the full INT8 model must have needed a float layer"
    assert len(q["sensitivity"]) == 5
    most = max(q["sensitivity"], key=q["sensitivity"].get)
    assert q["float_layers"][0] == most
    assert manifest["graphs"]["encoder_int8"]["float_layers"] == q["float_layers"]


def test_unreachable_agreement_fails_with_figures(tmp_path: Path, videos: Path) -> None:
    from edge_mer.calibration.readers import EncoderCalibrationReader
    from edge_mer.convert.checkpoint import load_model
    from edge_mer.convert.export import export_graphs, state_shapes
    from edge_mer.convert.quantize import Agreement, HeldOut, quantize_encoder

    class NeverAgrees(HeldOut):
        def agreement(self, int8_encoder: Path) -> Agreement:
            real = super().agreement(int8_encoder)  # the INT8 model must still run
            return Agreement(real.windows, 0.5, 0.9)

    loaded = load_model(_checkpoint(tmp_path))
    export_graphs(loaded, tmp_path)
    frames = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 1), dtype=np.uint8)
    windows = frames[:48].reshape(8, 6, 32, 32, 1)
    held = NeverAgrees(
        tmp_path / "encoder.onnx",
        tmp_path / "step.onnx",
        windows,
        loaded.state_names,
        state_shapes(loaded),
    )
    steps: list[str] = []
    with pytest.raises(QuantizationError, match=r"0.500 of 8 held-out windows.*4 of 5 layers"):
        quantize_encoder(
            tmp_path / "encoder.onnx",
            tmp_path / "int8.onnx",
            EncoderCalibrationReader([frames], batch_size=16),
            held,
            method="minmax",
            progress=steps.append,
        )
    assert any("sensitivity" in s for s in steps)
    assert not (tmp_path / "int8.onnx").exists()


def test_fp32_only_bundle_without_calibration(tmp_path: Path) -> None:
    manifest = convert(_checkpoint(tmp_path), tmp_path / "b", ConvertOptions())
    assert "encoder_int8" not in manifest["graphs"]
    assert manifest["calibration"] is None
    assert manifest["verification"]["fp32"]["calibration_windows"] == 0


def test_existing_output_refused_then_forced(tmp_path: Path) -> None:
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match=r"not empty.*--force"):
        convert(_checkpoint(tmp_path), out, ConvertOptions())
    assert (out / "keep.txt").exists()
    convert(_checkpoint(tmp_path), out, ConvertOptions(force=True))
    assert not (out / "keep.txt").exists() and (out / "manifest.json").exists()


def test_failed_convert_leaves_nothing(tmp_path: Path) -> None:
    model = build(TINY)
    with torch.no_grad():
        model.head.bias[1] = float("inf")
    save_checkpoint(model, tmp_path / "bad.safetensors", model.config)
    with pytest.raises(NonFiniteError):
        convert(tmp_path / "bad.safetensors", tmp_path / "b", ConvertOptions())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors"]


@pytest.mark.parametrize(
    ("setup", "opts", "error", "match"),
    [
        (None, {"int8": True}, InputError, "--int8 needs calibration clips"),
        ("empty", {"int8": True}, DataError, "no clips"),
        ("two", {"int8": True}, DataError, "need at least 4"),
        ("broken", {"int8": True}, DataError, "need at least 4"),
        ("two", {"int8": True, "holdout": 1.5}, InputError, "--holdout"),
        ("two", {"int8": True, "calib_method": "magic"}, InputError, "--calib-method 'magic'"),
        ("missing", {"int8": True}, DataError, "does not exist"),
    ],
)
def test_bad_calibration_inputs(tmp_path: Path, setup, opts, error, match) -> None:
    calib = tmp_path / "calib"
    if setup == "empty":
        calib.mkdir()
    elif setup == "two":
        write_videos(calib, 2)
    elif setup == "broken":
        calib.mkdir()
        for i in range(5):
            (calib / f"v{i}.mp4").write_bytes(b"not a video at all" * 10)
    opts = ConvertOptions(calib=None if setup is None else calib, **opts)
    with pytest.raises(error, match=match):
        convert(_checkpoint(tmp_path), tmp_path / "b", opts)
    assert not (tmp_path / "b").exists()
