"""Export to the three graphs and the verification that must catch a wrong export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from edge_mer.convert.checkpoint import LoadedModel, model_spec  # noqa: E402
from edge_mer.convert.export import export_graphs, state_shapes  # noqa: E402
from edge_mer.convert.models import build  # noqa: E402
from edge_mer.convert.verify import verify_fp32  # noqa: E402
from edge_mer.errors import ModelProtocolError, NonFiniteError, VerificationError  # noqa: E402
from edge_mer.streaming import ort_session, stream_logits  # noqa: E402
from tests.conftest import TINY  # noqa: E402


def _loaded(model: torch.nn.Module) -> LoadedModel:
    spec, labels, names = model_spec(model.eval(), "test")
    return LoadedModel(model, {}, Path("x"), "test", spec, labels, names)


@pytest.mark.parametrize(
    "cfg",
    [
        TINY,
        {
            **TINY,
            "rnn": "gru",
            "layers": 2,
            "input": {**TINY["input"], "channels": 3, "height": 40, "width": 24},
        },
        {**TINY, "cnn": "resnet18", "width_mult": 0.125, "layers": 2},
        {**TINY, "pool": 2, "baseline": 4, "rnn": "gru"},
    ],
    ids=["lstm-gray", "gru2-rgb-40x24", "resnet18-lstm2", "grid-pool-baseline-gru"],
)
def test_graphs_names_dynamic_batch_and_equivalence(tmp_path: Path, cfg: dict) -> None:
    torch.manual_seed(0)
    loaded = _loaded(build(cfg))
    ios = export_graphs(loaded, tmp_path)
    shapes = state_shapes(loaded)
    enc, step, clip = (ort_session(tmp_path / f"{g}.onnx") for g in ("encoder", "step", "clip"))
    assert [i.name for i in enc.get_inputs()] == ["frames"]
    assert [o.name for o in enc.get_outputs()] == ["features"]
    names = loaded.state_names
    assert [i.name for i in step.get_inputs()] == ["features", *names]
    assert [o.name for o in step.get_outputs()] == ["logits", *(f"{n}_next" for n in names)]
    assert [i.name for i in clip.get_inputs()] == ["clip"]
    assert enc.get_inputs()[0].type == "tensor(uint8)"
    model = onnx.load(str(tmp_path / "clip.onnx"))
    assert model.opset_import[0].version >= 17
    # Dynamic batch: 5 clips, where export used 2.
    h, w, c, t = (loaded.spec[k] for k in ("height", "width", "channels", "window"))
    clips = np.random.default_rng(1).integers(0, 256, (5, t, h, w, c), dtype=np.uint8)
    ref = loaded.model(torch.from_numpy(clips)).detach().numpy()
    got = clip.run(["logits"], {"clip": clips})[0]
    assert np.max(np.abs(ref - got)) < 1e-4
    streamed = stream_logits(enc, step, clips, names, shapes)
    assert np.max(np.abs(streamed - got)) < 1e-4
    figures = verify_fp32(loaded, tmp_path, ios, shapes, clips)
    assert figures["max_abs_streaming_vs_clip"] < 1e-4
    assert figures["max_abs_pytorch_vs_onnx"] < 1e-3
    assert figures["calibration_windows"] == 5
    assert set(ios["step"].inputs) == {"features", *names}


class ForwardIsNotSteps(torch.nn.Module):
    """forward() reads the clip backwards: encode+step can never match it."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = build(TINY)
        self.labels = self.inner.labels
        self.input_spec = self.inner.input_spec
        self.state_names = self.inner.state_names

    def encode(self, frames):
        return self.inner.encode(frames)

    def init_state(self, n):
        return self.inner.init_state(n)

    def step(self, f, s):
        return self.inner.step(f, s)

    def forward(self, clip):
        return self.inner(torch.flip(clip, dims=[1]))


def test_forward_that_is_not_encode_plus_step_fails(tmp_path: Path) -> None:
    torch.manual_seed(0)
    loaded = _loaded(ForwardIsNotSteps())
    ios = export_graphs(loaded, tmp_path)
    with pytest.raises(VerificationError, match="streaming"):
        verify_fp32(loaded, tmp_path, ios, state_shapes(loaded), None)


def test_nan_weights_fail_as_bad_input(tmp_path: Path) -> None:
    model = build(TINY)
    with torch.no_grad():
        model.head.bias[0] = float("nan")
    loaded = _loaded(model)
    ios = export_graphs(loaded, tmp_path)
    with pytest.raises(NonFiniteError, match="NaN or Inf"):
        verify_fp32(loaded, tmp_path, ios, state_shapes(loaded), None)


def test_state_must_be_batch_first_and_zero() -> None:
    model = build(TINY)
    model.init_state = lambda n: (torch.zeros(1, n, 16), torch.zeros(1, n, 16))  # layers-first
    with pytest.raises(ModelProtocolError, match="batch-first"):
        state_shapes(_loaded(model))
    model.init_state = lambda n: (torch.ones(n, 1, 16), torch.zeros(n, 1, 16))
    with pytest.raises(ModelProtocolError, match="non-zero"):
        state_shapes(_loaded(model))


class GridPooledUserModel(torch.nn.Module):
    """A user model the TorchScript exporter cannot trace: adaptive pooling to a 2x2 grid
    after a reshape that makes the frame size symbolic in the clip graph."""

    labels = ["a", "b", "c"]
    state_names = ["h"]
    input_spec = {"height": 24, "width": 24, "channels": 1, "fps": 30, "window": 4}

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, 2, 1)
        self.pool = torch.nn.AdaptiveAvgPool2d(2)
        self.gru = torch.nn.GRU(16, 8, batch_first=True)
        self.head = torch.nn.Linear(8, 3)

    def encode(self, frames):
        x = frames.permute(0, 3, 1, 2).float() / 255.0
        return self.pool(torch.relu(self.conv(x))).flatten(1)

    def init_state(self, n):
        return (torch.zeros(n, 1, 8),)

    def step(self, f, state):
        out, h = self.gru(f.unsqueeze(1), state[0].transpose(0, 1).contiguous())
        return self.head(out[:, 0]), (h.transpose(0, 1),)

    def forward(self, clip):
        n, t = clip.shape[:2]
        feats = self.encode(clip.reshape(n * t, *clip.shape[2:])).reshape(n, t, -1)
        out, _ = self.gru(feats)
        return self.head(out[:, -1])


@pytest.mark.slow
def test_dynamo_exporter_takes_over_when_torchscript_fails(tmp_path: Path, caplog) -> None:
    torch.manual_seed(0)
    loaded = _loaded(GridPooledUserModel())
    with caplog.at_level("INFO", logger="edge_mer.convert.export"):
        ios = export_graphs(loaded, tmp_path)
    assert "TorchScript exporter failed on the clip graph" in caplog.text
    figures = verify_fp32(loaded, tmp_path, ios, state_shapes(loaded), None)
    assert figures["max_abs_streaming_vs_clip"] < 1e-4
    clip = ort_session(tmp_path / "clip.onnx")
    x = np.random.default_rng(0).integers(0, 256, (5, 4, 24, 24, 1), dtype=np.uint8)
    ref = loaded.model(torch.from_numpy(x)).detach().numpy()
    assert np.max(np.abs(clip.run(["logits"], {"clip": x})[0] - ref)) < 1e-4


def test_reference_grid_pool_needs_no_fallback(tmp_path: Path, caplog) -> None:
    loaded = _loaded(build({**TINY, "pool": 2}))
    with caplog.at_level("INFO", logger="edge_mer.convert.export"):
        export_graphs(loaded, tmp_path)
    assert "failed" not in caplog.text
    assert caplog.text.count("torchscript exporter") == 3
