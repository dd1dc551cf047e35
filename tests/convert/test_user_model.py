"""Acceptance: a user's own architecture, through ``--model-factory``, converts exactly.

The user model lives in its own file that does not import edge_mer (as a researcher's
would): its own CNN, a two-layer GRU (or LSTM), RGB input of a size the reference model
does not use, normalisation inside ``encode``. The bundle is then opened with ONNX Runtime
directly, not through edge-mer's helpers, and the device's way of running it (encoder per
frame, step over time from zero states) must give the clip graph's and PyTorch's logits.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from typer.testing import CliRunner  # noqa: E402

from edge_mer.cli import app  # noqa: E402

LABELS = ["neutral", "happy", "disgust", "surprise", "repression"]
HEIGHT, WIDTH, WINDOW, FPS = 48, 40, 10, 30

_COMMON = """
import torch
from torch import nn


def _cnn(features):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, features),
    )


class _Base(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.labels = list(config["labels"])
        self.cnn = _cnn(config["features"])
        self.head = nn.Linear(config["hidden"], len(self.labels))
        self.register_buffer(
            "mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255.0, persistent=False
        )
        self.register_buffer(
            "std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255.0, persistent=False
        )

    def encode(self, frames):
        x = frames.permute(0, 3, 1, 2).float()
        return self.cnn((x - self.mean) / self.std)

    def forward(self, clip):
        n, t = clip.shape[:2]
        feats = self.encode(clip.reshape(n * t, *clip.shape[2:])).reshape(n, t, -1)
        out, _ = self.rnn(feats)
        return self.head(out[:, -1])
"""

GRU_MODEL = (
    _COMMON
    + """

class GruNet(_Base):
    state_names = ["hidden"]

    def __init__(self, config):
        super().__init__(config)
        self.input_spec = {
            "height": 48, "width": 40, "channels": 3, "fps": 30, "window": 10,
        }
        self.rnn = nn.GRU(config["features"], config["hidden"], num_layers=2, batch_first=True)

    def init_state(self, batch):
        return (torch.zeros(batch, self.rnn.num_layers, self.rnn.hidden_size),)

    def step(self, features, state):
        h = state[0].transpose(0, 1).contiguous()
        out, h = self.rnn(features.unsqueeze(1), h)
        return self.head(out[:, 0]), (h.transpose(0, 1),)


def build(config):
    return GruNet(config)
"""
)

LSTM_MODEL = (
    _COMMON
    + """
from dataclasses import dataclass


@dataclass
class Spec:
    height: int = 48
    width: int = 40
    channels: int = 3
    fps: float = 30.0
    window: int = 10


class LstmNet(_Base):
    def __init__(self, config):
        super().__init__(config)
        self.input_spec = Spec()
        self.state_names = ["h", "c"]
        self.rnn = nn.LSTM(config["features"], config["hidden"], num_layers=2, batch_first=True)

    def init_state(self, batch):
        shape = (batch, self.rnn.num_layers, self.rnn.hidden_size)
        return torch.zeros(shape), torch.zeros(shape)

    def step(self, features, state):
        h, c = (s.transpose(0, 1).contiguous() for s in state)
        out, (h, c) = self.rnn(features.unsqueeze(1), (h, c))
        return self.head(out[:, 0]), (h.transpose(0, 1), c.transpose(0, 1))


def build(config):
    return LstmNet(config)
"""
)

VARIANTS = {
    "gru": (GRU_MODEL, ["hidden"]),
    "lstm": (LSTM_MODEL, ["h", "c"]),
}
CONFIG = {"labels": LABELS, "features": 12, "hidden": 16}


def write_rgb_videos(folder: Path, n: int, frames: int = 20, seed: int = 0) -> Path:
    """``n`` colour videos at 30 fps (64x56), a moving coloured square on a noisy field."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        writer = cv2.VideoWriter(
            str(folder / f"clip{i}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (56, 64)
        )
        assert writer.isOpened()
        colour = rng.integers(0, 256, 3).tolist()
        for t in range(frames):
            img = rng.integers(0, 80, (64, 56, 3), dtype=np.uint8)
            x = 4 + (t * 2 + i * 3) % 30
            img[16:40, x : x + 20] = colour
            writer.write(img)
        writer.release()
    return folder


def read_windows(folder: Path, count: int) -> np.ndarray:
    """The first window of ``count`` videos, RGB, resized to the model: uint8 [N,T,H,W,3]."""
    clips = []
    for path in sorted(folder.glob("*.avi"))[:count]:
        cap = cv2.VideoCapture(str(path))
        frames = []
        while len(frames) < WINDOW:
            ok, bgr = cap.read()
            assert ok, f"{path} has fewer than {WINDOW} frames"
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            frames.append(cv2.resize(rgb, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA))
        cap.release()
        clips.append(np.stack(frames))
    return np.stack(clips)


def _import_user_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def rgb_videos(tmp_path_factory) -> Path:
    return write_rgb_videos(tmp_path_factory.mktemp("rgb") / "videos", 8)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_user_model_converts_and_streams_like_the_clip(
    tmp_path: Path, rgb_videos: Path, variant: str
) -> None:
    source, state_names = VARIANTS[variant]
    model_file = tmp_path / f"my_{variant}_net.py"
    model_file.write_text(textwrap.dedent(source))
    user = _import_user_file(model_file, f"_user_model_{variant}")
    assert "edge_mer" not in model_file.read_text()

    torch.manual_seed(7)
    model = user.build(dict(CONFIG))
    with torch.no_grad():  # non-trivial BatchNorm statistics, as a trained model has
        bn = model.cnn[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    model.eval()
    ckpt = tmp_path / f"{variant}.pt"
    torch.save(model.state_dict(), ckpt)
    cfg = tmp_path / "model.json"
    cfg.write_text(json.dumps(CONFIG))
    out = tmp_path / "bundle"

    result = CliRunner().invoke(
        app,
        [
            "convert",
            str(ckpt),
            "--out",
            str(out),
            "--model-factory",
            f"{model_file}:build",
            "--model-config",
            str(cfg),
            "--int8",
            "--calib",
            str(rgb_videos),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["labels"] == LABELS
    inp = manifest["input"]
    assert (inp["height"], inp["width"], inp["channels"]) == (HEIGHT, WIDTH, 3)
    assert (inp["fps"], inp["window"]) == (FPS, WINDOW)
    assert [s["name"] for s in manifest["state"]] == state_names
    for s in manifest["state"]:
        assert s["shape"] == [2, 16], "state must be batch-first [N, layers, hidden]"
        assert s["dtype"] == "float32"
    assert manifest["calibration"]["clips"] == 8

    encoder = _session(out / "encoder.onnx")
    step = _session(out / "step.onnx")
    clip = _session(out / "clip.onnx")
    assert [i.name for i in encoder.get_inputs()] == ["frames"]
    assert [o.name for o in encoder.get_outputs()] == ["features"]
    assert [i.name for i in step.get_inputs()] == ["features", *state_names]
    assert [o.name for o in step.get_outputs()] == ["logits", *(f"{n}_next" for n in state_names)]
    assert [i.name for i in clip.get_inputs()] == ["clip"]
    assert [o.name for o in clip.get_outputs()] == ["logits"]
    for i in step.get_inputs()[1:]:
        assert i.shape[1:] == [2, 16], f"{i.name} is not batch-first: {i.shape}"
        assert not isinstance(i.shape[0], int) or i.shape[0] < 0, "batch axis must be dynamic"
    for name in ("encoder", "step", "clip"):
        assert manifest["graphs"][name]["inputs"] == {
            i.name: [d if isinstance(d, int) else "batch" for d in i.shape]
            for i in _session(out / f"{name}.onnx").get_inputs()
        }

    windows = read_windows(rgb_videos, 5)  # [5, 10, 48, 40, 3] uint8
    n, t = windows.shape[:2]
    feats = encoder.run(["features"], {"frames": windows.reshape(n * t, HEIGHT, WIDTH, 3)})[0]
    feats = feats.reshape(n, t, -1)
    states = {s["name"]: np.zeros((n, *s["shape"]), dtype=np.float32) for s in manifest["state"]}
    outs = ["logits", *(f"{name}_next" for name in state_names)]
    for k in range(t):
        res = step.run(outs, {"features": np.ascontiguousarray(feats[:, k]), **states})
        logits = res[0]
        states = dict(zip(state_names, res[1:], strict=True))
    whole = clip.run(["logits"], {"clip": windows})[0]
    assert logits.shape == (n, len(LABELS))
    assert np.max(np.abs(logits - whole)) < 1e-4
    with torch.no_grad():
        reference = model(torch.from_numpy(windows)).numpy()
    assert np.max(np.abs(whole - reference)) < 1e-4
    assert np.max(np.abs(logits - reference)) < 1e-4
    assert np.std(reference) > 1e-3, "logits must differ between clips for this to mean much"

    # Streaming state really is batch-first: one face alone gives the same logits.
    one = {s["name"]: np.zeros((1, *s["shape"]), np.float32) for s in manifest["state"]}
    for k in range(t):
        res = step.run(outs, {"features": np.ascontiguousarray(feats[2:3, k]), **one})
        one = dict(zip(state_names, res[1:], strict=True))
    assert np.max(np.abs(res[0][0] - whole[2])) < 1e-4

    # The INT8 encoder: symmetric QDQ, every zero point present and 0, signed int8.
    q = onnx.load(str(out / "encoder.int8.onnx"))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in q.graph.initializer}
    consts = {
        o: onnx.numpy_helper.to_array(a.t)
        for node in q.graph.node
        if node.op_type == "Constant"
        for o in node.output
        for a in node.attribute
        if a.name == "value"
    }
    qdq = [x for x in q.graph.node if x.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq, "encoder.int8.onnx has no QuantizeLinear/DequantizeLinear nodes"
    for node in qdq:
        assert len(node.input) > 2 and node.input[2], f"{node.name} has no explicit zero point"
        zp = inits.get(node.input[2], consts.get(node.input[2]))
        assert zp is not None, f"{node.name}: zero point {node.input[2]!r} is not a constant"
        assert np.all(zp == 0), f"{node.name}: zero point {zp}"
        assert zp.dtype in (np.int8, np.int32), f"{node.name}: zero point dtype {zp.dtype}"
    assert any(inits.get(x.input[2], consts.get(x.input[2])).dtype == np.int8 for x in qdq), (
        "no int8 activations"
    )
    int8_enc = _session(out / "encoder.int8.onnx")
    q_feats = int8_enc.run(["features"], {"frames": windows[0]})[0]
    assert q_feats.shape == feats[0].shape and np.all(np.isfinite(q_feats))
