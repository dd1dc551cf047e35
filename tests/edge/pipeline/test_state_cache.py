"""StateCache: banked state equals clip.onnx over the window; track lifecycle; no per-frame
allocation in the frame loop."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from tests import REPO

pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")

from edge_mer.bundle import Bundle
from edge_mer.errors import InputError
from edge_mer.pipeline.preprocess import FramePreprocessor
from edge_mer.pipeline.state_cache import StateCache
from edge_mer.runners.ort import OrtEncoderRunner, OrtStepRunner
from edge_mer.streaming import ort_session
from tests.edge.runners.test_runners import make_bundle

T = 6  # the tiny model's window
DT = 0.02  # 50 fps


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_bundle(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def clip(bundle: Bundle):
    return ort_session(bundle.graph_path("clip"))


def run(bundle, frames, tracks, stride, max_tracks=4, **kw):
    """Feed frames[i, t] of track i through encoder + cache; yield (t, logits, ready)."""
    k = T // stride
    with (
        OrtEncoderRunner.from_bundle(bundle, max_tracks) as enc,
        OrtStepRunner.from_bundle(bundle, max_tracks * k) as st,
    ):
        cache = StateCache(bundle.states, max_tracks, step=st, window=T, stride=stride, **kw)
        cache.check_runner()
        n = len(tracks)
        for t in range(frames.shape[1]):
            enc.inputs["frames"][:n] = frames[:, t]
            logits, ready = cache.step_batch(tracks, enc.infer(n)["features"], now=t * DT)
            yield t, logits.copy(), ready.copy(), cache


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_banked_cache_equals_clip_over_the_last_window(bundle, clip, stride) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (2, 17, 32, 32, 1), dtype=np.uint8)
    checked = 0
    for t, logits, ready, cache in run(bundle, frames, ["a", 7], stride):
        completes = t >= T - 1 and (t + 1) % stride == 0
        assert list(ready) == [completes, completes], t
        if not completes:
            continue
        ref = clip.run(["logits"], {"clip": frames[:, t - T + 1 : t + 1]})[0]
        np.testing.assert_allclose(logits, ref, atol=1e-4)
        assert list(cache.frames_seen[:2]) == [T, T]
        checked += 1
    assert checked == len([t for t in range(T - 1, 17) if (t + 1) % stride == 0])
    assert cache.stats["gathers"] == 1  # same tracks every frame: states stay resident
    assert not np.allclose(ref[0], ref[1])  # the two tracks really differ


def test_warm_up_rows_equal_clip_on_the_frames_so_far(bundle, clip) -> None:
    frames = np.random.default_rng(1).integers(0, 256, (1, 4, 32, 32, 1), dtype=np.uint8)
    enc_s = ort_session(bundle.graph_path("encoder"))
    step_s = ort_session(bundle.graph_path("step"))
    from edge_mer.streaming import stream_logits

    for t, logits, ready, cache in run(bundle, frames, ["x"], 1):
        assert not ready[0] and cache.frames_seen[0] == t + 1
        ref = stream_logits(
            enc_s, step_s, frames[:, : t + 1], ["h", "c"], [s.shape for s in bundle.states]
        )
        np.testing.assert_allclose(logits, ref, atol=1e-4)


def test_tracks_joining_and_leaving_keep_their_own_windows(bundle, clip) -> None:
    rng = np.random.default_rng(2)
    fa = rng.integers(0, 256, (12, 32, 32, 1), dtype=np.uint8)
    fb = rng.integers(0, 256, (12, 32, 32, 1), dtype=np.uint8)
    with (
        OrtEncoderRunner.from_bundle(bundle, 2) as enc,
        OrtStepRunner.from_bundle(bundle, 12) as st,
    ):
        cache = StateCache(bundle.states, 2, 10.0, 1.0, step=st, window=T)
        for t in range(12):
            ids = ["a"] if t < 3 else ["b", "a"]  # b joins at t=3, in front of a
            src = [fa] if t < 3 else [fb, fa]
            for i, f in enumerate(src):
                enc.inputs["frames"][i] = f[t]
            logits, ready = cache.step_batch(ids, enc.infer(len(ids))["features"], now=t * DT)
        ref_a = clip.run(["logits"], {"clip": fa[None, 6:12]})[0][0]
        ref_b = clip.run(["logits"], {"clip": fb[None, 6:12]})[0][0]
        np.testing.assert_allclose(logits[1], ref_a, atol=1e-4)
        np.testing.assert_allclose(logits[0], ref_b, atol=1e-4)
        assert list(ready) == [True, True] and cache.age("b") == 9 and cache.age("a") == 12


@pytest.mark.parametrize("spare", [None, 0], ids=["rotating", "fixed-banks"])
def test_tracks_coming_and_going_keep_each_window_exact(bundle, clip, spare) -> None:
    """Tracks join, leave, return and change order from frame to frame: every ready row is
    clip.onnx over that track's own last T frames, for the rotating banks (the runner's
    shifted state, including its layout changes) and for fixed banks."""
    rng = np.random.default_rng(5)
    feed = {tid: rng.integers(0, 256, (40, 32, 32, 1), dtype=np.uint8) for tid in "abc"}
    seen: dict[str, int] = dict.fromkeys("abc", 0)
    kw = {} if spare is None else {"state_spare_rows": spare}
    checked = 0
    with (
        OrtEncoderRunner.from_bundle(bundle, 3) as enc,
        OrtStepRunner.from_bundle(bundle, 3 * T, **kw) as st,
    ):
        cache = StateCache(bundle.states, 3, 10.0, 1.0, step=st, window=T)
        assert cache.rotating == (spare is None)
        for t in range(40):
            ids = [str(x) for x in rng.permutation(list("abc"))[: rng.integers(1, 4)]]
            if t % 7 < 4:  # stretches of the same tracks in the same order: the steady path
                ids = ["a", "b"] if t % 14 < 7 else ["c"]
            for i, tid in enumerate(ids):
                enc.inputs["frames"][i] = feed[tid][seen[tid]]
                seen[tid] += 1
            logits, ready = cache.step_batch(ids, enc.infer(len(ids))["features"], now=t * DT)
            for i, tid in enumerate(ids):
                assert ready[i] == (seen[tid] >= T) and cache.frames_seen[i] == min(seen[tid], T)
                if ready[i]:
                    ref = clip.run(["logits"], {"clip": feed[tid][None, seen[tid] - T : seen[tid]]})
                    np.testing.assert_allclose(logits[i], ref[0][0], atol=1e-4)
                    checked += 1
    assert checked > 40 and cache.stats["resident"] > 10 and cache.stats["gathers"] > 10


def make_cache(bundle, st, **kw) -> StateCache:
    kw = {"ttl_s": 1.0, "reset_gap_s": 0.1, "window": T, **kw}
    return StateCache(bundle.states, kw.pop("max_tracks", 2), step=st, **kw)


def test_gap_resets_ttl_evicts_lru_when_full_and_ids_are_reused(bundle) -> None:
    feats = np.ones((3, 16), np.float32)
    with OrtStepRunner.from_bundle(bundle, 2 * T) as st:
        cache = make_cache(bundle, st)
        for t in range(4):
            cache.step_batch(["a", "b"], feats, now=t * DT)
        assert cache.age("a") == 4 and np.any(cache.state("a")["h"] != 0)
        # a returns after a gap > reset_gap_s: its window restarts from zero state
        cache.step_batch(["a"], feats, now=0.5)
        assert cache.age("a") == 1 and cache.stats["resets"] == 1
        # b unseen for > ttl_s: evicted at the next step
        cache.step_batch(["a"], feats, now=1.1)
        assert "b" not in cache and len(cache) == 1 and cache.stats["evictions"] == 1
        # full cache: a new track evicts the least recently seen one
        cache.step_batch(["c"], feats, now=1.12)
        cache.step_batch(["a"], feats, now=1.14)
        cache.step_batch(["d"], feats, now=1.16)  # c is the LRU, a was seen later
        assert set(cache.tracks()) == {"a", "d"}
        # a reused id starts fresh
        cache.step_batch(["c"], feats, now=1.18)
        assert cache.age("c") == 1 and cache.stats["new"] == 5
        assert set(cache.tracks()) == {"d", "c"}
        cache.evict("d")
        assert "d" not in cache


def test_bad_arguments_are_refused(bundle) -> None:
    with OrtStepRunner.from_bundle(bundle, 4) as st:
        with pytest.raises(InputError, match="divide the window"):
            make_cache(bundle, st, stride=4)
        with pytest.raises(InputError, match="max_batch"):
            make_cache(bundle, st, max_tracks=2)  # needs 2 * 6 rows
        cache = make_cache(bundle, st, max_tracks=2, stride=3)
        with pytest.raises(InputError, match="twice"):
            cache.step_batch(["a", "a"], np.zeros((2, 16), np.float32), now=0.0)
        with pytest.raises(InputError, match="tracks in one frame"):
            cache.step_batch(["a", "b", "c"], np.zeros((3, 16), np.float32), now=0.0)


def test_frame_loop_allocates_nothing_per_frame(bundle) -> None:
    rng = np.random.default_rng(3)
    camera = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(8)]
    boxes = [(8, 8, 64, 64), (40, 20, 72, 70)]
    pre = FramePreprocessor(32, 32, 1)
    edge_dir = str(REPO / "edge")
    tracks = ["a", "b"]
    with (
        OrtEncoderRunner.from_bundle(bundle, 2) as enc,
        OrtStepRunner.from_bundle(bundle, 2 * T) as st,
    ):
        cache = StateCache(bundle.states, 2, 10.0, 1.0, step=st, window=T)
        frames_in = enc.inputs["frames"]

        def frame(t: int) -> None:
            img = camera[t % 8]
            for i in range(2):
                pre(img, boxes[i], out=frames_in[i])
            cache.step_batch(tracks, enc.infer(2)["features"], now=t * DT)

        # Trace from before the warm-up (bindings per batch size, scratch buffers, numpy's
        # small-block caches), so blocks recycled through those pools are not "new".
        tracemalloc.start(5)
        try:
            for t in range(50):
                frame(t)
            before = tracemalloc.take_snapshot()
            for t in range(50, 350):
                frame(t)
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    flt = [tracemalloc.Filter(True, edge_dir + "/*")]
    diff = after.filter_traces(flt).compare_to(before.filter_traces(flt), "lineno")
    report = [str(d) for d in diff if d.count_diff]
    # One allocation kept per frame would be >= 300 blocks. What remains is bounded pool
    # jitter (numpy/OpenCV small-object caches, a few live ints such as counters).
    assert sum(d.count_diff for d in diff) < 64, report
    assert sum(d.size_diff for d in diff) < 4096, report
    ours = [d for d in diff if "state_cache" in str(d) or "runners" in str(d)]
    assert sum(d.count_diff for d in ours) <= 8, report
    assert cache.stats["gathers"] == 1 and cache.stats["resident"] == 349


# ------------------------------------------------------------------------- window models


@pytest.fixture(scope="module")
def window_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A tiny causal TCN (a window model: its state is each layer's input history)."""
    torch = pytest.importorskip("torch")
    from edge_mer.convert.checkpoint import save_checkpoint
    from edge_mer.convert.pipeline import ConvertOptions, convert
    from edge_mer.convert.registry import build
    from tests.conftest import TINY

    root = tmp_path_factory.mktemp("window")
    torch.manual_seed(0)
    model = build({**TINY, "arch": "cnn_tcn"})
    save_checkpoint(model, root / "tcn.safetensors", model.config)
    convert(root / "tcn.safetensors", root / "bundle", ConvertOptions())
    return Bundle.open(root / "bundle")


def test_window_model_steps_one_row_per_track_and_equals_clip_every_frame(window_bundle):
    assert window_bundle.state_kind == "window"
    clip = ort_session(window_bundle.graph_path("clip"))
    rng = np.random.default_rng(4)
    fa, fb = (rng.integers(0, 256, (15, 32, 32, 1), dtype=np.uint8) for _ in range(2))
    with (
        OrtEncoderRunner.from_bundle(window_bundle, 2) as enc,
        OrtStepRunner.from_bundle(window_bundle, 2) as st,  # tracks x 1 row, not x T
    ):
        cache = StateCache(
            window_bundle.states, 2, 10.0, 1.0, step=st, window=T, state_kind="window"
        )
        cache.check_runner()
        assert cache.banks == 1
        checked = 0
        for t in range(15):
            ids, src = (["a"], [fa]) if t < 4 else (["b", "a"], [fb, fa])  # b joins at t=4
            for i, f in enumerate(src):
                enc.inputs["frames"][i] = f[t]
            logits, ready = cache.step_batch(ids, enc.infer(len(ids))["features"], now=t * DT)
            age_a = t + 1
            assert ready[ids.index("a")] == (age_a >= T)
            assert cache.frames_seen[ids.index("a")] == min(age_a, T)
            if age_a >= T:  # every frame, not every stride-th: the one row is exact
                ref = clip.run(["logits"], {"clip": fa[None, t - T + 1 : t + 1]})[0][0]
                np.testing.assert_allclose(logits[ids.index("a")], ref, atol=1e-4)
                checked += 1
        ref_b = clip.run(["logits"], {"clip": fb[None, 15 - T : 15]})[0][0]
        np.testing.assert_allclose(logits[0], ref_b, atol=1e-4)
        assert checked == 15 - T + 1 and cache.state("a")["hist0"].shape[0] == 1


def test_state_kind_is_checked(window_bundle) -> None:
    with (
        OrtStepRunner.from_bundle(window_bundle, 2) as st,
        pytest.raises(InputError, match="state_kind"),
    ):
        StateCache(window_bundle.states, 2, step=st, window=T, state_kind="banked")
