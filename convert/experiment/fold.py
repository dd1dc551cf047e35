"""One job: train on a fold's training subjects, convert to INT8, score its test subjects.

1. Clips come from the frame cache (:mod:`~edge_mer.convert.experiment.cache`).
2. Two-stage training (:func:`edge_mer.convert.train.fit`, or the model's ``train_fn``), with
   ``selection = inner-val`` choosing the epoch on the fold's validation subjects; with
   ``[train] streams = true`` also on the streams of the fold's training subjects (from the
   stream cache, :mod:`~edge_mer.convert.experiment.streams`), which adds the background
   class ``none`` (and ``macro``) and chooses the spotter's settings on those streams.
3. The checkpoint goes through :func:`edge_mer.convert.pipeline.convert`, the code of
   ``edge-mer convert --int8``, calibrated on clips of the fold's training subjects only.
4. Every test sample is scored by PyTorch (``forward`` over its window), and by ONNX Runtime
   FP32 and INT8 through the device's runners: the encoder once per frame, then the step
   graph frame by frame from zero state, as ``edge-mer run``'s state cache does.

The evaluation window of a sample (the same rule for every runtime, model and dataset, and
the rule the reference evaluation uses): ``input.window`` frames at the model's fps whose
last frame lies a quarter window after the apex; where a dataset has no apex (SMIC) the
onset/offset midpoint stands in for it. Short clips are padded by repeating their last
frame.
"""

from __future__ import annotations

import csv
import logging
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from edge_mer.convert.experiment import streams as stream_cache
from edge_mer.convert.experiment.backends import Context
from edge_mer.convert.experiment.cache import CacheReader
from edge_mer.convert.experiment.jobs import Job, fail, finish, scratch, write_json
from edge_mer.convert.experiment.study import ModelSection, Study
from edge_mer.errors import EdgeMerError

log = logging.getLogger(__name__)
INT8_GRAPH = "encoder_int8"  # s8s8: what TensorRT and ONNX Runtime on ARM run


def evaluation_window(frames: np.ndarray, entry: dict[str, Any], window: int) -> np.ndarray:
    """The sample's scored window (see the module docstring), uint8 ``[window, H, W, C]``."""
    n = len(frames)
    if n < window:
        frames = np.concatenate([frames, np.repeat(frames[-1:], window - n, axis=0)])
        n = window
    apex = entry["apex"]
    if apex is None:
        apex = (entry["onset"] + entry["offset"]) // 2
    last = min(n - 1, max(window - 1, apex + window // 4))
    return np.ascontiguousarray(frames[last - window + 1 : last + 1])


def _train_clips(reader: CacheReader, ids: tuple[str, ...]) -> list[Any]:
    from edge_mer.convert.train import TrainClip

    clips = []
    for sid in ids:
        e = reader.entries[sid]
        clips.append(
            TrainClip(
                frames=np.array(reader.frames(sid)),  # writable: training makes tensors of it
                label=e["label"],
                subject=e["subject"],
                onset=e["onset"],
                apex=e["apex"],
                offset=e["offset"],
                sample_id=sid,
            )
        )
    return clips


def model_labels(study: Study, labels: list[str]) -> list[str]:
    """The model's classes: the protocol's, then with streams the background class."""
    bg = stream_cache.BACKGROUND
    return [*labels, bg] if study.train.streams and bg not in labels else list(labels)


def _model_config(study: Study, m: ModelSection, labels: list[str]) -> dict[str, Any]:
    cfg = {**m.config, "labels": model_labels(study, labels)}
    if m.arch is not None:
        cfg["arch"] = m.arch
    if study.protocol.fps:
        cfg["input"] = {**cfg.get("input", {}), "fps": float(study.protocol.fps)}
    return cfg


def _stream_reader(job: Job, ctx: Context, study: Study, work: Path) -> Any:
    """The shared stream cache, or (frame cache off) one of this job's own."""
    caches = ctx.options.get("stream_caches")
    if caches is not None:
        return stream_cache.StreamReader([Path(p) for p in caches[job.model]])
    private = ctx.options["private_cache"]
    spec = private["specs"][job.model]
    folders = [
        stream_cache.build(work / "cache", name, Path(private["roots"][name]), spec)
        for name in stream_cache.training_datasets(study.protocol)
    ]
    return stream_cache.StreamReader(folders)


def _streams(
    job: Job, ctx: Context, study: Study, labels: list[str], work: Path
) -> tuple[list[Any], dict[str, Any]]:
    """The fold's training subjects' streams, and what the job records of them."""
    t0 = time.perf_counter()
    reader = _stream_reader(job, ctx, study, work)
    found = stream_cache.fold_streams(
        job.fold, reader, labels, stream_cache.stream_label_map(study)
    )
    frames = sum(len(s.frames) for s in found)
    record = {
        "subjects": sorted({s.subject for s in found}),
        "streams": len(found),
        "frames": frames,
        "video_seconds": round(sum(len(s.frames) / s.fps for s in found), 2),
        "megabytes": round(sum(s.frames.nbytes for s in found) / 2**20, 1),  # mapped, shared
        "load_seconds": round(time.perf_counter() - t0, 3),
    }
    return found, record


def _train(
    job: Job, ctx: Context, study: Study, m: ModelSection, reader: CacheReader, work: Path
) -> tuple[Any, list[Any], dict[str, Any] | None]:
    """(the trained model's TrainResult, the training clips, the streams' record or None)."""
    from edge_mer.convert.checkpoint import _load_factory
    from edge_mer.convert.train import TrainOptions, fit

    t = study.train
    opts = TrainOptions(
        cnn_epochs=t.cnn_epochs,
        head_epochs=t.head_epochs,
        finetune_epochs=t.finetune_epochs,
        batch_size=t.batch_size,
        lr=t.lr,
        seed=job.seed,
        selection=t.selection,
        threads=ctx.threads,
        cache_features=bool(ctx.options.get("feature_cache", True)),
    )
    train = _train_clips(reader, job.fold.train)
    validation = _train_clips(reader, job.fold.validation) if job.fold.validation else None
    if t.selection == "inner-val" and not validation:
        raise EdgeMerError(f"fold {job.fold.id}: no validation subjects for selection inner-val")
    config = _model_config(study, m, ctx.options["labels"])
    fn = _load_factory(m.train_fn) if m.train_fn else fit
    if not t.streams:
        result = fn(train, config, options=opts, validation=validation, factory=m.factory)
        return result, train, None
    from edge_mer.convert.train_folder import with_macro_class

    streams, record = _streams(job, ctx, study, config["labels"], work)
    config = with_macro_class(config, m.config, m.factory, config["labels"], streams)
    stream_cache.check_fold_streams(job.fold, streams)  # what reaches training, asserted
    result = fn(
        train, config, options=opts, validation=validation, factory=m.factory, streams=streams
    )
    record["labels"] = list(config["labels"])
    return result, train, record


def _convert(study: Study, m: ModelSection, result: Any, work: Path, train_clips: list) -> Any:
    from edge_mer.bundle import Bundle
    from edge_mer.convert.pipeline import ConvertOptions, convert

    ckpt = work / "model.safetensors"
    result.save(ckpt)
    d = study.deploy
    # Calibration: training-subject clips only, spread evenly over them.
    step = max(1, len(train_clips) // d.calib_clips)
    calib = [c.frames for c in train_clips[::step]][: d.calib_clips]
    opts = ConvertOptions(
        int8=d.int8,
        calib_clips=calib,
        calib_source=f"{len(calib)} clips of the fold's training subjects",
        calib_method=d.calib_method,
        min_agreement=d.min_agreement,
        factory=m.factory,
        name=m.name,
    )
    convert(ckpt, work / "bundle", opts)
    return Bundle.open(work / "bundle")


def _stream(bundle: Any, graph: str, windows: np.ndarray, threads: int) -> np.ndarray:
    """Logits after the last frame of each window, through the device's ORT runners."""
    from edge_mer.runners.ort import OrtEncoderRunner, OrtStepRunner

    n, t = windows.shape[:2]
    batch = min(n, 64)
    out = np.zeros((n, len(bundle.labels)), np.float32)
    enc = OrtEncoderRunner.from_bundle(bundle, batch * t, graph=graph, threads=threads)
    step = OrtStepRunner.from_bundle(bundle, batch, threads=threads)
    with enc, step:
        for i in range(0, n, batch):
            b = min(batch, n - i)
            enc.inputs["frames"][: b * t] = windows[i : i + b].reshape(b * t, *windows.shape[2:])
            feats = enc.infer(b * t)["features"].reshape(b, t, -1).copy()
            step.reset_state(b)
            for k in range(t):
                step.inputs["features"][:b] = feats[:, k]
                logits = step.infer(b)["logits"]
            out[i : i + b] = logits
    return out


def _latency_ms(bundle: Any, graph: str, frames: np.ndarray, rounds: int = 60) -> float:
    """Median ms per frame of encoder + one step, batch 1, 1 thread (this machine)."""
    from edge_mer.runners.ort import OrtEncoderRunner, OrtStepRunner

    times = []
    enc = OrtEncoderRunner.from_bundle(bundle, 1, graph=graph, threads=1)
    step = OrtStepRunner.from_bundle(bundle, 1, threads=1)
    with enc, step:
        for i in range(rounds + 10):
            t0 = time.perf_counter()
            enc.inputs["frames"][0] = frames[i % len(frames)]
            step.inputs["features"][0] = enc.infer(1)["features"][0]
            step.infer(1)
            if i >= 10:
                times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def _score(
    job: Job, ctx: Context, result: Any, bundle: Any, reader: CacheReader
) -> dict[str, dict[str, str]]:
    """runtime -> sample id -> predicted label."""
    import torch

    window = int(bundle.input["window"])
    ids = list(job.fold.test)
    windows = np.stack(
        [evaluation_window(reader.frames(s), reader.entries[s], window) for s in ids]
    )
    logits: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        model = result.model.eval()
        logits["pytorch"] = np.concatenate(
            [
                model(torch.from_numpy(windows[i : i + 32])).numpy()
                for i in range(0, len(windows), 32)
            ]
        )
    logits["onnxruntime-fp32"] = _stream(bundle, "encoder", windows, ctx.threads)
    if INT8_GRAPH in bundle.manifest["graphs"]:
        logits["onnxruntime-int8"] = _stream(bundle, INT8_GRAPH, windows, ctx.threads)
    labels = list(bundle.labels)
    return {
        r: dict(zip(ids, (labels[k] for k in v.argmax(1)), strict=True)) for r, v in logits.items()
    }


def _record(
    job: Job, reader: CacheReader, calib_subjects: list[str], bundle: Any, streams: dict | None
) -> dict[str, Any]:
    return {
        "fold": job.fold.to_json(),
        "model": job.model,
        "seed": job.seed,
        "calibration_subjects": calib_subjects,
        "stream_subjects": streams["subjects"] if streams else [],
        # The model's classes: the protocol's, and with streams "none" (and "macro"), whose
        # predictions count as misses (results.py).
        "model_labels": list(bundle.labels),
        "test_samples": [
            {
                "sample": s,
                "dataset": reader.entries[s]["dataset"],
                "subject": reader.entries[s]["subject"],
                "label": reader.entries[s]["label"],
            }
            for s in job.fold.test
        ],
    }


def _reader(job: Job, ctx: Context, work: Path) -> CacheReader:
    """The shared frame cache, or (benchmarks: frame cache off) one of this job's own."""
    caches = ctx.options.get("caches")
    if caches is not None:
        return CacheReader([Path(p) for p in caches[job.model]])
    from edge_mer.convert.experiment import cache

    private = ctx.options["private_cache"]
    spec = private["specs"][job.model]
    ids = (*job.fold.train, *job.fold.validation, *job.fold.test)
    folders = []
    by_dataset: dict[str, list[str]] = {}
    for sid in ids:
        by_dataset.setdefault(private["samples"][sid][0].dataset, []).append(sid)
    for dataset, sids in by_dataset.items():
        samples = [private["samples"][s][0] for s in sids]
        labels = {s: private["samples"][s][1] for s in sids}
        root = Path(private["roots"][dataset])
        folders.append(cache.build(work / "cache", dataset, root, samples, labels, spec))
    return CacheReader(folders)


def run_fold(job: Job, ctx: Context) -> dict[str, Any]:
    """The job entry point (see :class:`~edge_mer.convert.experiment.backends.Context`)."""
    out = Path(ctx.out)
    started = time.perf_counter()
    try:
        study = Study.model_validate(ctx.options["study"])
        m = next(x for x in study.model if x.name == job.model)
        with scratch(job, out) as work:
            reader = _reader(job, ctx, work)
            result, train_clips, streams = _train(job, ctx, study, m, reader, work)
            calib_subjects = sorted({c.subject for c in train_clips})
            bundle = _convert(study, m, result, work, train_clips)
            preds = _score(job, ctx, result, bundle, reader)
            write_json(work / "fold.json", _record(job, reader, calib_subjects, bundle, streams))
            with open(work / "predictions.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["sample", "runtime", "predicted"])
                for runtime, by_id in preds.items():
                    w.writerows([sid, runtime, p] for sid, p in by_id.items())
            graph = INT8_GRAPH if INT8_GRAPH in bundle.manifest["graphs"] else "encoder"
            sample = reader.frames(job.fold.test[0])
            size = sum(p.stat().st_size for p in (work / "bundle").rglob("*") if p.is_file())
            summary = {
                "seconds": round(time.perf_counter() - started, 2),
                "train_clips": len(job.fold.train),
                "test_clips": len(job.fold.test),
                "ms_per_frame": _latency_ms(bundle, graph, np.asarray(sample)),
                "ms_graph": graph,
                "bundle_mb": size / 2**20,
                "training": result.summary,
                "verification": bundle.manifest.get("verification"),
            }
            if streams is not None:
                # Chosen on the fold's training subjects' streams; the bundle's manifest
                # carries the same settings (convert copies them from the checkpoint).
                summary["streams"] = {**streams, "spotter": bundle.manifest.get("spotter")}
            write_json(work / "metrics.json", summary)
            shutil.rmtree(work / "cache", ignore_errors=True)  # a job's own cache (benchmarks)
            finish(job, work, {k: summary[k] for k in ("seconds", "ms_per_frame", "bundle_mb")})
        return {"key": job.key, "status": "done", **summary}
    except Exception as exc:  # a job's failure is recorded; the study goes on
        seconds = time.perf_counter() - started
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not isinstance(exc, EdgeMerError):
            reason = f"{type(exc).__name__}: {reason}"
            log.debug("job %s failed:\n%s", job.key, traceback.format_exc())
        fail(job, out, reason, seconds)
        return {"key": job.key, "status": "failed", "reason": reason, "seconds": seconds}
