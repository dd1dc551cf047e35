"""The model registry: every arch x encoder streams exactly (PyTorch and ONNX Runtime), window
models forget what lies before their window, configs that cannot be exact are refused."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from edge_mer.convert.checkpoint import LoadedModel, model_spec  # noqa: E402
from edge_mer.convert.export import export_graphs, state_shapes  # noqa: E402
from edge_mer.convert.registry import ARCHS, build, resolve_config  # noqa: E402
from edge_mer.convert.verify import verify_fp32, verify_window_claim  # noqa: E402
from edge_mer.errors import InputError  # noqa: E402
from edge_mer.streaming import ort_session, stream_logits  # noqa: E402
from tests.conftest import TINY  # noqa: E402

ENCODERS = ("small", "resnet18", "mobilenet")
KINDS = {
    "cnn_lstm": "recurrent",
    "cnn_gru": "recurrent",
    "cnn_attn_lstm": "recurrent",
    "cnn_transformer": "window",
    "cnn_tcn": "window",
}


def tiny(arch: str, cnn: str = "small", **extra) -> dict:
    """32x32 gray, feature 16, window 6: the test suite's size for every arch."""
    cfg = {**TINY, "arch": arch, "cnn": cnn, **extra}
    if cnn == "resnet18":
        cfg["width_mult"] = 0.125
    return cfg


def loaded_of(model: torch.nn.Module) -> LoadedModel:
    spec, labels, names = model_spec(model.eval(), "test")
    return LoadedModel(model, {}, Path("x"), "test", spec, labels, names, model.state_kind)


def clips(n: int, t: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, t, 32, 32, 1), dtype=np.uint8)


def test_registry_lists_the_issue_architectures() -> None:
    assert set(ARCHS) == set(KINDS)


@pytest.mark.parametrize(("arch", "cnn"), list(itertools.product(KINDS, ENCODERS)))
def test_clip_equals_steps_and_window_models_forget_older_frames(arch: str, cnn: str) -> None:
    torch.manual_seed(0)
    model = build(tiny(arch, cnn)).eval()
    assert model.state_kind == KINDS[arch]
    x = torch.from_numpy(clips(3, 6))
    past = torch.from_numpy(clips(3, 9, seed=1))
    with torch.no_grad():
        ref = model(x)
        logits = {}
        for name, seq in (("fresh", x), ("after history", torch.cat([past, x], dim=1))):
            state = model.init_state(3)
            for t in range(seq.shape[1]):
                out, state = model.step(model.encode(seq[:, t]), state)
            logits[name] = out
    torch.testing.assert_close(logits["fresh"], ref, atol=1e-5, rtol=0)
    differs = float((logits["after history"] - ref).abs().max())
    if KINDS[arch] == "window":
        assert differs < 1e-5
    else:  # a recurrent state remembers the history: banks are needed
        assert differs > 1e-4


@pytest.mark.parametrize(
    ("arch", "cnn"),
    [*((a, "small") for a in KINDS), ("cnn_lstm", "mobilenet"), ("cnn_tcn", "resnet18")],
)
def test_onnx_graphs_are_exact_batch_dynamic_and_window_claims_hold(tmp_path, arch, cnn) -> None:
    torch.manual_seed(0)
    loaded = loaded_of(build(tiny(arch, cnn)))
    ios = export_graphs(loaded, tmp_path)
    shapes = state_shapes(loaded)
    figures = verify_fp32(loaded, tmp_path, ios, shapes, clips(4, 6, seed=2))
    assert figures["max_abs_streaming_vs_clip"] < 1e-4
    step = ort_session(tmp_path / "step.onnx")
    # Every state input (KV cache, TCN history, online-softmax sums) has a dynamic batch axis.
    assert all(isinstance(i.shape[0], str) for i in step.get_inputs())
    enc, clip = ort_session(tmp_path / "encoder.onnx"), ort_session(tmp_path / "clip.onnx")
    x = clips(5, 6, seed=3)
    streamed = stream_logits(enc, step, x, loaded.state_names, shapes)
    np.testing.assert_allclose(streamed, clip.run(["logits"], {"clip": x})[0], atol=1e-4)
    if KINDS[arch] == "window":
        claim = verify_window_claim(loaded, tmp_path, shapes)
        assert claim["max_abs_between_histories"] < 1e-5 and claim["max_abs_vs_clip"] < 1e-4


def test_transformer_and_tcn_export_with_torchscript_at_opset_17(tmp_path, caplog) -> None:
    import onnx

    for arch in ("cnn_transformer", "cnn_tcn"):
        caplog.clear()
        with caplog.at_level("INFO", logger="edge_mer.convert.export"):
            export_graphs(loaded_of(build(tiny(arch))), tmp_path)
        assert caplog.text.count("torchscript exporter") == 3, caplog.text
        step = onnx.load(str(tmp_path / "step.onnx"))
        assert step.opset_import[0].version == 17
    ops = {n.op_type for n in onnx.load(str(tmp_path / "clip.onnx")).graph.node}
    assert "LayerNormalization" in ops


def test_attention_pooling_stays_finite_for_extreme_scores() -> None:
    """Scores far below zero: a running max started at 0 would underflow to 0/0."""
    torch.manual_seed(0)
    model = build(tiny("cnn_attn_lstm")).eval()
    with torch.no_grad():
        model.score[-1].bias.fill_(-500.0)
        model.score[-1].weight.mul_(200.0)
        x = torch.from_numpy(clips(2, 6))
        ref = model(x)
        state = model.init_state(2)
        for t in range(6):
            out, state = model.step(model.encode(x[:, t]), state)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_derived_span_and_dilations_fill_the_window() -> None:
    cfg = resolve_config(tiny("cnn_transformer", layers=2))
    assert cfg["span"] == 3  # 2 x (3 - 1) + 1 = 5 <= 6 frames
    assert resolve_config({**tiny("cnn_transformer"), "input": {"window": 16}})["span"] == 8
    assert resolve_config(tiny("cnn_tcn"))["dilations"] == [1, 1]  # 1 + 2 x 2 = 5 <= 6
    assert resolve_config({**tiny("cnn_tcn"), "input": {"window": 64}})["dilations"] == [
        1,
        2,
        4,
        8,
        16,
    ]


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"arch": "cnn_mamba"}, r"arch='cnn_mamba' is not in the registry: choose one of \["),
        (
            {"arch": "cnn_transformer", "span": 6},
            r"receptive field layers 2 x \(span 6 - 1\) \+ 1 = 11 frames exceeds input.window 6",
        ),
        (
            {"arch": "cnn_transformer", "layers": 1, "span": 2},
            r"input.window 6 is larger than the attention span allows .* = 2 frames",
        ),
        (
            {"arch": "cnn_tcn", "dilations": [1, 2, 4]},
            r"receptive field 1 \+ \(kernel 3 - 1\) x sum\(dilations \[1, 2, 4\]\) = 15 frames "
            r"exceeds input.window 6",
        ),
        (
            {"arch": "cnn_tcn", "kernel": 2, "dilations": [1]},
            r"input.window 6 is larger than the receptive field .* = 2 frames allows",
        ),
        ({"arch": "cnn_transformer", "hidden": 18}, r"hidden=18 must be divisible by heads=4"),
        ({"arch": "cnn_tcn", "baseline": 4}, r"key 'baseline' is not used by arch 'cnn_tcn'"),
        ({"cnn": "vgg"}, r"cnn='vgg': choose one of \['small', 'resnet18', 'mobilenet'\]"),
    ],
)
def test_configs_that_cannot_work_are_refused_in_one_line(cfg: dict, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        build({**TINY, **cfg})
    assert "\n" not in str(info.value)


def test_first_release_configs_still_build_the_same_model() -> None:
    old = {**TINY, "arch": "cnn_rnn", "rnn": "gru", "layers": 2}
    model = build(old)
    assert model.arch == "cnn_gru" and isinstance(model.rnn, torch.nn.GRU)
    # The first release's parameter names: cnn.*, rnn.*, head.* (the classifier).
    assert {k.split(".")[0] for k in model.state_dict()} == {"cnn", "rnn", "head"}
    assert build({**TINY, "rnn": "lstm"}).arch == "cnn_lstm"
