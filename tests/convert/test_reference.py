"""The window-start reference (``reference: "window-start"``): the recurrent heads read
``f_t - f_first``, the first frame carried as state; exact streaming in PyTorch, in ONNX
Runtime, and through the state cache's staggered banks (each bank's reference is the first
frame of its own window)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from edge_mer.bundle import Bundle  # noqa: E402
from edge_mer.convert.checkpoint import save_checkpoint  # noqa: E402
from edge_mer.convert.pipeline import ConvertOptions, convert  # noqa: E402
from edge_mer.convert.registry import build  # noqa: E402
from edge_mer.errors import InputError  # noqa: E402
from edge_mer.pipeline.state_cache import StateCache  # noqa: E402
from edge_mer.runners.ort import OrtEncoderRunner, OrtStepRunner  # noqa: E402
from edge_mer.streaming import ort_session  # noqa: E402
from tests.conftest import TINY  # noqa: E402

T = 6


def clips(n: int, t: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, t, 32, 32, 1), dtype=np.uint8)


@pytest.mark.parametrize("arch", ["cnn_lstm", "cnn_gru", "cnn_attn_lstm"])
def test_steps_equal_the_clip_and_the_reference_is_the_first_frame(arch: str) -> None:
    torch.manual_seed(0)
    model = build({**TINY, "arch": arch, "reference": "window-start"}).eval()
    assert model.state_names[-2:] == ["ref", "seen"]
    x = torch.from_numpy(clips(3, T))
    with torch.no_grad():
        ref = model(x)
        state = model.init_state(3)
        for t in range(T):
            f = model.encode(x[:, t])
            out, state = model.step(f, state)
            if t == 0:
                first = f
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(state[-2], first, atol=0, rtol=0)  # held exactly
        assert float(state[-1].min()) == 1.0
        # A still face is a still face, whoever it is: windows of one repeated frame give
        # the same logits for every face (the plain model reads the faces themselves).
        still = x[:, :1].repeat(1, T, 1, 1, 1)
        faces = model(still)
        plain = build({**TINY, "arch": arch}).eval()
        plain.load_state_dict(model.state_dict())
        plain_faces = plain(still)
    torch.testing.assert_close(faces[1:], faces[:1].expand(2, -1), atol=1e-6, rtol=0)
    assert float((plain_faces[1:] - plain_faces[:1]).abs().max()) > 1e-4


def test_reference_and_baseline_are_exclusive_and_values_are_checked() -> None:
    with pytest.raises(InputError, match="baseline=4 and reference='window-start' are exclusive"):
        build({**TINY, "baseline": 4, "reference": "window-start"})
    with pytest.raises(InputError, match=r"reference='first': choose one of \['none', 'window"):
        build({**TINY, "reference": "first"})
    with pytest.raises(InputError, match="key 'reference' is not used by arch 'cnn_tcn'"):
        build({**TINY, "arch": "cnn_tcn", "reference": "window-start"})
    # A config without the key (every checkpoint before it existed) means no reference.
    assert build(TINY).state_names == ["h", "c"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    root = tmp_path_factory.mktemp("reference")
    torch.manual_seed(0)
    model = build({**TINY, "pool": 2, "reference": "window-start"})
    ckpt = root / "ref.safetensors"
    save_checkpoint(model, ckpt, model.config)
    convert(ckpt, root / "bundle", ConvertOptions())
    return Bundle.open(root / "bundle")


def test_convert_proves_the_bundle_and_the_banks_each_keep_their_own_reference(
    bundle: Bundle,
) -> None:
    """Every bank restarts from zero state every T frames, so at each frame the bank that
    completes its window took that window's first frame as reference: the cache equals
    clip.onnx on the last T frames at every frame, and after a gap that resets the track."""
    fp32 = bundle.manifest["verification"]["fp32"]
    assert fp32["max_abs_streaming_vs_clip"] < 1e-4
    assert [s.name for s in bundle.states] == ["h", "c", "ref", "seen"]
    clip = ort_session(bundle.graph_path("clip"))
    frames = clips(2, 23, seed=4)
    checked = 0
    with (
        OrtEncoderRunner.from_bundle(bundle, 2) as enc,
        OrtStepRunner.from_bundle(bundle, 2 * T) as st,
    ):
        cache = StateCache(bundle.states, 2, 10.0, 0.5, step=st, window=T)
        now = 0.0
        for t in range(frames.shape[1]):
            now += 1.0 if t == 14 else 0.02  # a 1 s gap before frame 14: the window restarts
            enc.inputs["frames"][:2] = frames[:, t]
            logits, ready = cache.step_batch(["a", "b"], enc.infer(2)["features"], now=now)
            start = max(t - T + 1, 14 if t >= 14 else 0)
            if t - start + 1 < T:
                assert not ready.any()
                continue
            assert ready.all()
            want = clip.run(["logits"], {"clip": frames[:, start : t + 1]})[0]
            np.testing.assert_allclose(logits[:2], want, atol=1e-4)
            checked += 1
    assert checked == (14 - (T - 1)) + (23 - 14 - (T - 1))


def test_registry_reference_checkpoint_converts_with_int8_agreement(
    tmp_path: Path, bundle: Bundle
) -> None:
    """The subtraction is in the float step graph: the INT8 encoder is calibrated and
    checked as for any model (convert's agreement check on held-out windows)."""
    pytest.importorskip("cv2")
    from tests.convert.test_pipeline import write_videos

    videos = write_videos(tmp_path / "v", 8)
    ckpt = Path(bundle.path).parent / "ref.safetensors"
    manifest = convert(
        ckpt, tmp_path / "b8", ConvertOptions(int8=True, calib=videos, min_agreement=0.9)
    )
    assert manifest["verification"]["int8"]["top1_agreement"] >= 0.9
    assert manifest["model"]["config"]["reference"] == "window-start"
