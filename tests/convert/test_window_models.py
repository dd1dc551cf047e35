"""Acceptance: window models end to end, as a new user runs them.

- A user's own temporal model made of standard PyTorch layers (a ring of the last T - 1
  features + a Conv1d over the window + Linear), declared ``state_kind = "window"``, goes
  through ``edge-mer convert --model-factory ... --int8`` and ``edge-mer run``, stepping one
  state row per track.
- The same kind of claim on a GRU (whose state remembers everything) is refused at convert
  time, exit 2, one line naming the graph and the difference.
- Every registry architecture converts with ``--int8`` and runs live on ``synthetic://``.
"""

from __future__ import annotations

import itertools
import json
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from edge_mer.bundle import Bundle  # noqa: E402
from edge_mer.convert.checkpoint import save_checkpoint  # noqa: E402
from edge_mer.convert.registry import build  # noqa: E402
from tests.convert.test_registry import ENCODERS, KINDS, tiny  # noqa: E402
from tests.edge.test_cli import assert_bad_input, run  # noqa: E402

USER_MODELS = '''
import torch
from torch import nn

INPUT = {"height": 32, "width": 32, "channels": 1, "fps": 50, "window": 6}


class _Base(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.labels = ["negative", "positive", "surprise"]
        self.input_spec = dict(INPUT)
        d = cfg.get("features", 16)
        self.cnn = nn.Sequential(
            nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, d, 3, 2, 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )

    def encode(self, frames):
        return self.cnn(frames.permute(0, 3, 1, 2).float() / 255.0 - 0.5)

    def features(self, clip):
        n, t = clip.shape[:2]
        return self.encode(clip.reshape(n * t, *clip.shape[2:])).reshape(n, t, -1)


class RingConv(_Base):
    """The last T - 1 features in a ring; a Conv1d spanning the window, then Linear."""

    state_kind = "window"
    state_names = ["ring"]

    def __init__(self, cfg):
        super().__init__(cfg)
        d, t = cfg.get("features", 16), INPUT["window"]
        self.temporal = nn.Conv1d(d, 24, kernel_size=t)
        self.head = nn.Linear(24, 3)

    def init_state(self, batch):
        return (torch.zeros(batch, INPUT["window"] - 1, self.temporal.in_channels),)

    def step(self, f, state):
        ring = torch.cat([state[0], f.unsqueeze(1)], dim=1)  # [N, T, D]: the whole window
        out = torch.relu(self.temporal(ring.transpose(1, 2)))[:, :, 0]
        return self.head(out), (ring[:, 1:],)

    def forward(self, clip):
        out = torch.relu(self.temporal(self.features(clip).transpose(1, 2)))
        return self.head(out[:, :, -1])


class GruCalledWindow(_Base):
    """A GRU: its state depends on all history, whatever it claims."""

    state_kind = "window"
    state_names = ["h"]

    def __init__(self, cfg):
        super().__init__(cfg)
        self.gru = nn.GRU(cfg.get("features", 16), 16, batch_first=True)
        self.head = nn.Linear(16, 3)

    def init_state(self, batch):
        return (torch.zeros(batch, 1, 16),)

    def step(self, f, state):
        out, h = self.gru(f.unsqueeze(1), state[0].transpose(0, 1).contiguous())
        return self.head(out[:, 0]), (h.transpose(0, 1),)

    def forward(self, clip):
        return self.head(self.gru(self.features(clip))[0][:, -1])


class GrowingRing(RingConv):
    """Appends every feature and never drops one: the state changes shape each step."""

    def step(self, f, state):
        ring = torch.cat([state[0], f.unsqueeze(1)], dim=1)
        out = torch.relu(self.temporal(ring[:, -INPUT["window"] :].transpose(1, 2)))[:, :, 0]
        return self.head(out), (ring,)


def ring(cfg):
    return RingConv(cfg)


def growing(cfg):
    return GrowingRing(cfg)


def gru(cfg):
    return GruCalledWindow(cfg)
'''


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    from tests.convert.test_pipeline import write_videos

    return write_videos(tmp_path_factory.mktemp("calib") / "vids", 6, frames=20)


@pytest.fixture(scope="module")
def user_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("user") / "my_window_model.py"
    path.write_text(textwrap.dedent(USER_MODELS))
    return path


def _user_checkpoint(user_file: Path, fn: str, folder: Path) -> Path:
    from edge_mer.convert.checkpoint import _load_factory

    torch.manual_seed(3)
    model = _load_factory(f"{user_file}:{fn}")({})
    ckpt = folder / f"{fn}.pt"
    torch.save(model.state_dict(), ckpt)
    (folder / "cfg.json").write_text(json.dumps({"features": 16}))
    return ckpt


def test_user_window_model_converts_and_runs_one_row_per_track(
    tmp_path: Path, user_file: Path, videos: Path
) -> None:
    ckpt = _user_checkpoint(user_file, "ring", tmp_path)
    out = tmp_path / "bundle"
    res = run(
        "convert", ckpt, "--out", out, "--model-factory", f"{user_file}:ring",
        "--model-config", tmp_path / "cfg.json", "--int8", "--calib", videos,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    bundle = Bundle.open(out)
    assert bundle.state_kind == "window"
    m = bundle.manifest
    assert m["cost"]["step_rows_per_frame"] == 1
    assert m["cost"]["state_bytes_per_track"] == 5 * 16 * 4
    window = m["verification"]["window"]
    assert window["max_abs_between_histories"] < 1e-5 and window["max_abs_vs_clip"] < 1e-4
    res = run("inspect", out)
    assert res.exit_code == 0 and "window state, 1 step row per frame per track" in res.output

    from edge_mer.config import config_from_args
    from edge_mer.pipeline.live import LivePipeline, run_until

    cfg = config_from_args(
        out,
        "synthetic://?seconds=1&fps=50&size=32x32",
        events=tmp_path / "ev.jsonl",
        stdout=False,
        tables={"face": {"detector": "none"}, "metrics": {"enabled": False}},
    )
    with LivePipeline(cfg) as pipe:
        why = run_until(pipe)
    assert pipe.model_frames >= 40 and why
    assert pipe.step.max_batch == pipe.max_faces  # one step row per track, not T
    assert pipe.cache.banks == 1


def test_false_window_claim_is_refused_at_convert_time(
    tmp_path: Path, user_file: Path, videos: Path
) -> None:
    ckpt = _user_checkpoint(user_file, "gru", tmp_path)
    out = tmp_path / "bundle"
    res = run(
        "convert", ckpt, "--out", out, "--model-factory", f"{user_file}:gru",
        "--model-config", tmp_path / "cfg.json", "--calib", videos,
    )  # fmt: skip
    line = assert_bad_input(res, "state_kind 'window'", "step.onnx", "clip.onnx", out=out)
    diff = float(line.split("before the same 6 frames ends ")[1].split()[0])
    assert diff > 1e-4


def test_a_state_that_changes_shape_is_refused_in_one_line(tmp_path: Path, user_file: Path):
    ckpt = _user_checkpoint(user_file, "growing", tmp_path)
    out = tmp_path / "bundle"
    res = run(
        "convert", ckpt, "--out", out, "--model-factory", f"{user_file}:growing",
        "--model-config", tmp_path / "cfg.json",
    )  # fmt: skip
    line = assert_bad_input(res, "step 1 returned state shapes [(1, 6, 16)]", "(1, 5, 16)", out=out)
    assert "must keep its shape" in line


def _arch_bundle(root: Path, arch: str, cnn: str, videos: Path) -> Path:
    torch.manual_seed(0)
    model = build(tiny(arch, cnn))
    ckpt = root / "m.safetensors"
    save_checkpoint(model, ckpt, model.config)
    res = run("convert", ckpt, "--out", root / "bundle", "--int8", "--calib", videos)
    assert res.exit_code == 0, res.output
    return root / "bundle"


def _converts_with_int8_and_runs_live(tmp_path: Path, arch: str, cnn: str, videos: Path):
    bundle_dir = _arch_bundle(tmp_path, arch, cnn, videos)
    bundle = Bundle.open(bundle_dir)
    v = bundle.manifest["verification"]
    assert v["fp32"]["max_abs_streaming_vs_clip"] < 1e-4
    assert v["fp32"]["max_abs_pytorch_vs_onnx"] < 1e-3
    assert v["int8"]["top1_agreement"] >= v["int8"]["min_agreement"]
    assert bundle.state_kind == KINDS[arch] and ("window" in v) == (KINDS[arch] == "window")
    if "window" in v:  # the same last T frames after two histories: bit-identical states
        assert v["window"]["max_abs_between_histories"] == 0.0
    events = tmp_path / "events.jsonl"
    res = run(
        "run", "--bundle", bundle_dir, "--source", "synthetic://?seconds=1&fps=50&size=32x32",
        "--events", events, "--frames", 40,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert events.exists()
    return bundle


@pytest.mark.parametrize("arch", list(KINDS))
def test_every_arch_converts_with_int8_and_runs_live(tmp_path, arch, videos) -> None:
    _converts_with_int8_and_runs_live(tmp_path, arch, "small", videos)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arch", "cnn"),
    [(a, c) for a, c in itertools.product(KINDS, ENCODERS) if c != "small"],
)
def test_every_arch_x_encoder_converts_with_int8_and_runs_live(tmp_path, arch, cnn, videos):
    _converts_with_int8_and_runs_live(tmp_path, arch, cnn, videos)
