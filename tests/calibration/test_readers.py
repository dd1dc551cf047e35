import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edge_mer.calibration.readers import (  # noqa: E402
    EncoderCalibrationReader,
    discover_clips,
    load_clips,
    resample_indices,
)
from edge_mer.errors import DataError  # noqa: E402
from edge_mer.pipeline.preprocess import FramePreprocessor  # noqa: E402


def _frame(value, h=24, w=32):
    return np.full((h, w, 3), value, np.uint8)


def write_frames(folder, values, name="img{}.jpg"):
    """One frame per value, written as PNG-exact gray levels in the name's format."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, v in enumerate(values):
        cv2.imwrite(str(folder / name.format(i)), _frame(v))
    return folder


def write_video(path, n, fps=30.0, size=(32, 24)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), (i * 9) % 250, np.uint8))
    writer.release()
    return path


# --- resampling by seconds -------------------------------------------------------------


def test_resample_down_keeps_every_fourth():
    idx = resample_indices(100, 200.0, 50.0)
    assert idx.tolist() == list(range(0, 100, 4))


def test_resample_up_repeats_and_preserves_duration():
    idx = resample_indices(30, 30.0, 100.0)
    assert len(idx) == 100  # 1 s either way
    assert idx[:8].tolist() == [0, 0, 0, 0, 1, 1, 1, 2]
    assert idx[-1] == 29 and (np.diff(idx) >= 0).all()
    assert set(idx.tolist()) == set(range(30))


@pytest.mark.parametrize(("n", "src", "dst"), [(61, 200.0, 30.0), (45, 25.0, 30.0), (7, 29.97, 30)])
def test_resample_duration(n, src, dst):
    idx = resample_indices(n, src, dst)
    assert abs(len(idx) / dst - n / src) <= 1 / dst + 1e-9
    assert idx.min() >= 0 and idx.max() < n
    # each output frame shows the source frame on screen at its time
    t = np.arange(len(idx)) / dst
    assert (idx / src <= t + 1e-9).all() and (t < (idx + 1) / src).all()


def test_resample_same_fps_is_identity_and_empty_clip():
    assert resample_indices(10, 25, 25).tolist() == list(range(10))
    assert resample_indices(0, 25, 50).size == 0


# --- discovery ---------------------------------------------------------------------------


def test_discover_single_video_with_container_fps(tmp_path):
    video = write_video(tmp_path / "a.avi", 10, fps=25.0)
    (clip,) = discover_clips(video, default_fps=99.0)
    assert (clip.kind, clip.path, clip.name) == ("video", video, "a.avi")
    assert clip.fps == pytest.approx(25.0)


def test_discover_folder_of_videos(tmp_path):
    write_video(tmp_path / "b.avi", 5)
    write_video(tmp_path / "a.avi", 5)
    (tmp_path / "notes.txt").write_text("not a clip")
    clips = discover_clips(tmp_path)
    assert [c.name for c in clips] == ["a.avi", "b.avi"]
    assert {c.kind for c in clips} == {"video"}


def test_discover_frame_folder_sorts_numerically(tmp_path):
    folder = write_frames(tmp_path / "clip", range(12), name="frame_{}.png")
    (clip,) = discover_clips(folder, default_fps=30.0)
    assert clip.kind == "frames" and clip.fps == 30.0 and clip.name == "clip"
    assert [p.name for p in clip.frame_paths] == [f"frame_{i}.png" for i in range(12)]


def test_discover_folder_of_frame_folders(tmp_path):
    write_frames(tmp_path / "s2", range(3))
    write_frames(tmp_path / "s1", range(4))
    clips = discover_clips(tmp_path)
    assert [(c.name, len(c.frame_paths)) for c in clips] == [("s1", 4), ("s2", 3)]
    assert all(c.fps is None for c in clips)


def test_discover_casme2_root(tmp_path):
    (tmp_path / "CASME2-coding-20140508.csv").write_text(
        "Subject,Filename,OnsetFrame,ApexFrame,OffsetFrame,Action Units,Estimated Emotion\n"
        "1,EP01,0,/,3,AU4,happiness\n"
    )
    write_frames(tmp_path / "sub01" / "EP01", range(4))
    (clip,) = discover_clips(tmp_path, default_fps=30.0)
    assert (clip.kind, clip.name, clip.fps) == ("casme2", "casme2/01/EP01", 200.0)
    assert clip.coded is not None and clip.coded.emotion == "happiness"
    assert len(clip.frame_paths) == 4


def test_discover_missing_and_empty(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        discover_clips(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no clips in") as e:
        discover_clips(tmp_path / "empty")
    assert "CASME II root" in str(e.value)
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(DataError, match="not a video"):
        discover_clips(tmp_path / "x.txt")


# --- loading -------------------------------------------------------------------------------


def test_load_frames_resamples_by_seconds(tmp_path):
    values = [i * 10 for i in range(20)]
    write_frames(tmp_path / "c", values, name="{}.png")
    (clip,) = discover_clips(tmp_path / "c", default_fps=200.0)
    pre = FramePreprocessor(8, 8, 1)
    full = clip.load(pre)
    assert full.shape == (20, 8, 8, 1) and full.dtype == np.uint8
    assert full[:, 0, 0, 0].tolist() == values
    down = clip.load(pre, fps=50.0)
    assert down[:, 0, 0, 0].tolist() == values[::4]
    capped = clip.load(pre, fps=400.0, max_frames=5)
    assert capped[:, 0, 0, 0].tolist() == [0, 0, 10, 10, 20]


def test_load_video_resamples_like_frames(tmp_path):
    video = write_video(tmp_path / "v.avi", 30, fps=30.0)
    (clip,) = discover_clips(video)
    pre = FramePreprocessor(12, 16, 3)
    full = clip.load(pre)
    assert full.shape == (30, 12, 16, 3)
    up = clip.load(pre, fps=100.0)
    assert len(up) == 100
    np.testing.assert_array_equal(up, full[resample_indices(30, 30.0, 100.0)])
    down = clip.load(pre, fps=10.0, max_frames=4)
    np.testing.assert_array_equal(down, full[[0, 3, 6, 9]])


def test_wrong_size_frames_are_resized(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    cv2.imwrite(str(folder / "1.png"), _frame(50, 10, 10))
    cv2.imwrite(str(folder / "2.png"), _frame(60, 40, 30))
    (clip,) = discover_clips(folder)
    assert clip.load(FramePreprocessor(6, 6, 3)).shape == (2, 6, 6, 3)


def test_corrupt_jpg_names_the_file(tmp_path):
    folder = write_frames(tmp_path / "c", [1, 2])
    (folder / "img2.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (clip,) = discover_clips(folder)
    with pytest.raises(DataError, match=r"img2\.jpg"):
        clip.load(FramePreprocessor(4, 4, 3))


def test_unreadable_video_names_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00garbage" * 100)
    (clip,) = discover_clips(bad, default_fps=30.0)
    assert clip.fps == 30.0  # no container fps -> default
    with pytest.raises(DataError, match=r"broken\.mp4"):
        clip.load(FramePreprocessor(4, 4, 3))


def test_load_clips_counts_and_min_clips(tmp_path):
    write_frames(tmp_path / "a", range(5))
    write_frames(tmp_path / "b", range(3))
    bad = tmp_path / "c"
    bad.mkdir()
    (bad / "0.jpg").write_bytes(b"junk")
    pre = FramePreprocessor(4, 4, 3)
    seen = []
    clips, sources = load_clips(
        tmp_path, pre, fps=30.0, max_frames_per_clip=4, progress=lambda *a: seen.append(a[:2])
    )
    assert [s.name for s in sources] == ["a", "b"]
    assert [len(c) for c in clips] == [4, 3]
    assert seen == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(DataError, match=r"found 2 clips in .*need at least 4.*--holdout"):
        load_clips(tmp_path, pre, fps=30.0, min_clips=4)


# --- the calibration reader ------------------------------------------------------------


def _clips():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (t, 8, 8, 3), dtype=np.uint8) for t in (5, 12, 1)]


def test_reader_batches_cover_every_frame_and_rewind():
    clips = _clips()
    reader = EncoderCalibrationReader(clips, batch_size=4)
    assert len(reader) == 5  # 18 frames
    batches = list(iter(reader.get_next, None))
    assert [b["frames"].shape[0] for b in batches] == [4, 4, 4, 4, 2]
    assert all(b["frames"].flags.c_contiguous and b["frames"].dtype == np.uint8 for b in batches)
    np.testing.assert_array_equal(
        np.concatenate([b["frames"] for b in batches]), np.concatenate(clips)
    )
    assert reader.get_next() is None
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["frames"], batches[0]["frames"])


def test_reader_stride_and_name():
    clips = _clips()
    reader = EncoderCalibrationReader(clips, input_name="x", batch_size=100, frame_stride=2)
    (batch,) = iter(reader.get_next, None)
    np.testing.assert_array_equal(batch["x"], np.concatenate([c[::2] for c in clips]))
    assert reader.num_frames == 3 + 6 + 1


def test_reader_rejects_mismatched_clips():
    with pytest.raises(DataError, match="same FramePreprocessor"):
        EncoderCalibrationReader(
            [np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8, 1), np.uint8)]
        )
    with pytest.raises(DataError, match="uint8"):
        EncoderCalibrationReader([np.zeros((2, 8, 8, 3), np.float32)])
    with pytest.raises(DataError):
        EncoderCalibrationReader([])


def _tiny_encoder(path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(1).normal(size=(4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["frames"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("Conv", ["nchw", "w"], ["features"], pads=[1, 1, 1, 1]),
        ],
        "tiny",
        [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["N", 8, 8, 3])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return onnx


def test_quantize_static_accepts_reader(tmp_path):
    pytest.importorskip("onnxruntime")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    onnx = _tiny_encoder(tmp_path / "enc.onnx")
    reader = EncoderCalibrationReader(_clips(), batch_size=8)
    assert isinstance(reader, CalibrationDataReader)
    quantize_static(
        str(tmp_path / "enc.onnx"),
        str(tmp_path / "enc.int8.onnx"),
        reader,
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    ops = [n.op_type for n in onnx.load(str(tmp_path / "enc.int8.onnx")).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and "Conv" in ops
