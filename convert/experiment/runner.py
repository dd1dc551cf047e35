"""``edge-mer experiment run``: a study file -> folds -> frame caches -> jobs -> results.

The output folder holds ``study.json`` (the study and its digest), one folder per job
(``<model>/seed=<s>/fold=<id>/``), ``cache/`` (the frame caches, unless ``--cache`` puts
them elsewhere), and after every run ``predictions.csv`` and ``results.json``. A folder made
by another study (another digest) is refused, by name of both hashes; ``--resume`` skips the
jobs whose marker matches and redoes the rest.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge_mer import __version__
from edge_mer.convert.experiment import cache as frame_cache
from edge_mer.convert.experiment import streams as stream_cache
from edge_mer.convert.experiment.backends import (
    BACKENDS,
    Context,
    check_address,
    run_jobs,
    threads_per_job,
)
from edge_mer.convert.experiment.jobs import (
    STUDY_FILE,
    FoldSpec,
    Job,
    expand,
    read_json,
    status,
    sweep_scratch,
    write_json,
)
from edge_mer.convert.experiment.results import collect
from edge_mer.convert.experiment.study import Study, load_study
from edge_mer.convert.experiment.summary import save_jobs
from edge_mer.errors import DataError, InputError

log = logging.getLogger(__name__)
ENTRY = "edge_mer.convert.experiment.fold:run_fold"
Say = Callable[[str], None]


@dataclass
class RunOptions:
    out: Path
    jobs: int = 1
    backend: str = "local"
    address: str | None = None
    resume: bool = False
    cache: Path | None = None  # default: OUT/cache
    frame_cache: bool = True  # False: every job decodes its own clips (benchmarks)
    feature_cache: bool = True  # False: stage-2 features recomputed every epoch (benchmarks)
    retries: int = 3
    gpus: float = 0.0  # per job, declared to Ray


@dataclass
class Plan:
    """What a study expands to, before anything runs."""

    study: Study
    labels: list[str]
    samples: dict[str, Any]  # sample id -> Labelled (sample + label)
    folds: list[FoldSpec]
    jobs: list[Job]
    specs: dict[str, frame_cache.CacheSpec] = field(default_factory=dict)  # model -> spec
    missing: list[str] = field(default_factory=list)  # official ids the copies lack
    streams: dict[str, list[str]] = field(default_factory=dict)  # dataset -> stream subjects


def _samples(study: Study) -> tuple[dict[str, Any], list[str], list[str]]:
    """Labelled samples by id, the label set, and (megc2019 with allow_missing) the ids of
    the official list that the copies lack."""
    from edge_mer.calibration.datasets import apply_map, build_megc2019, get_map, read_dataset

    proto = study.protocol
    if proto.kind == "megc2019":
        comp = build_megc2019(
            study.data["casme2"],
            study.data["samm"],
            study.data["smic-hs"],
            allow_missing=proto.allow_missing,
        )
        labelled = list(comp.samples)
        labels = list(get_map("megc3").labels)
        missing = list(comp.missing)
    else:
        labelled = []
        for name in proto.dataset_names():
            copy = read_dataset(name, study.data[name])
            kept, _dropped = apply_map(copy.samples, proto.label_map)
            labelled += kept
        labels = list(get_map(proto.label_map).labels)
        missing = []
    return {s.id: s for s in labelled}, labels, missing


def _folds(study: Study, samples: dict[str, Any]) -> list[FoldSpec]:
    from edge_mer.calibration.datasets import make_folds

    p = study.protocol
    val = p.validation_fraction if study.train.selection == "inner-val" else 0.0
    folds = make_folds(
        p.kind,
        list(samples.values()),
        dataset=p.dataset,
        train=p.train,
        test=p.test or None,
        val_fraction=val,
        seed=0,  # the same folds and validation subjects for every model and seed
    )
    return [
        FoldSpec(
            id=f.slug,
            train_subjects=f.train_subjects,
            validation_subjects=f.validation_subjects,
            test_subjects=f.test_subjects,
            train=f.train,
            validation=f.validation,
            test=f.test,
        )
        for f in folds
    ]


def _spec(study: Study, m: Any, labels: list[str]) -> frame_cache.CacheSpec:
    """The input a model reads. The model is built once here, so a config it refuses stops
    the study before any job runs (one line naming the model), not once per fold."""
    from edge_mer.convert.experiment.fold import _model_config
    from edge_mer.convert.protocol import model_spec
    from edge_mer.convert.train_model import build_model

    cfg = _model_config(study, m, labels)
    try:
        model = build_model(cfg, m.factory)
        inp, outputs, _ = model_spec(model, m.factory or m.arch or m.name)
    except InputError as exc:
        raise InputError(f"model {m.name!r}: {exc}") from None
    if study.train.streams and stream_cache.BACKGROUND not in outputs:
        raise InputError(
            f"model {m.name!r} has the classes {list(outputs)}: training on streams needs "
            f"the background class {stream_cache.BACKGROUND!r} the study adds to "
            "config['labels'] (take the labels from there), or set [train] streams = false"
        )
    return frame_cache.CacheSpec(
        int(inp["height"]),
        int(inp["width"]),
        int(inp["channels"]),
        float(inp["fps"]),
        study.protocol.face,
    )


def plan(study: Study, say: Say | None = None) -> Plan:
    say = say or (lambda _m: None)
    samples, labels, missing = _samples(study)
    folds = _folds(study, samples)
    check_folds(folds)
    jobs = expand([m.name for m in study.model], study.train.seeds, folds, study.digest())
    specs = {m.name: _spec(study, m, labels) for m in study.model}
    streams = {}
    if study.train.streams:  # before any job: one line if the streams cannot be used
        for m in study.model:
            if m.train_fn:
                stream_cache.check_train_fn(m.name, m.train_fn)
        streams = stream_cache.check_study_streams(study, samples, say)
    return Plan(study, labels, samples, folds, jobs, specs, missing, streams)


def _prepare_out(out: Path, study: Study, resume: bool) -> None:
    digest = study.digest()
    record = read_json(out / STUDY_FILE)
    if record is not None:
        if record.get("digest") != digest:
            raise InputError(
                f"{str(out)!r} holds the study {record.get('name')!r} (digest "
                f"{record.get('digest')}), not this one (digest {digest}): choose another --out"
            )
        if not resume:
            raise InputError(
                f"{str(out)!r} already holds this study: pass --resume to continue it "
                "(finished jobs are kept) or choose another --out"
            )
    elif out.exists() and any(out.iterdir()):
        raise InputError(f"--out {str(out)!r} is not empty and holds no study: choose another")
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / STUDY_FILE,
        {
            "name": study.study.name,
            "digest": digest,
            "study": json.loads(study.model_dump_json()),
            "edge_mer": __version__,
            "created": (record or {}).get("created")
            or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )


def build_caches(p: Plan, folder: Path, workers: int, say: Say) -> dict[str, list[str]]:
    """One frame cache per (dataset, input spec); returns model -> its cache folders."""
    by_dataset: dict[str, list[Any]] = {}
    for labelled in p.samples.values():
        by_dataset.setdefault(labelled.dataset, []).append(labelled)
    built: dict[tuple[str, frame_cache.CacheSpec], str] = {}
    out: dict[str, list[str]] = {}
    for model, spec in p.specs.items():
        for dataset, items in sorted(by_dataset.items()):
            key = (dataset, spec)
            if key not in built:
                root = p.study.data[dataset]
                built[key] = str(
                    frame_cache.build(
                        folder,
                        dataset,
                        root,
                        [x.sample for x in items],
                        {x.id: x.label for x in items},
                        spec,
                        workers=workers,
                        say=say,
                    )
                )
            out.setdefault(model, []).append(built[key])
    return out


def build_stream_caches(p: Plan, folder: Path, workers: int, say: Say) -> dict[str, list[str]]:
    """One stream cache per (training dataset, input spec); returns model -> its folders."""
    built: dict[tuple[str, frame_cache.CacheSpec], str] = {}
    out: dict[str, list[str]] = {}
    for model, spec in p.specs.items():
        for dataset in sorted(p.streams):
            if (dataset, spec) not in built:
                root = p.study.data[dataset]
                path = stream_cache.build(folder, dataset, root, spec, workers=workers, say=say)
                built[(dataset, spec)] = str(path)
            out.setdefault(model, []).append(built[(dataset, spec)])
    return out


def run_study(
    study_path: Path,
    opts: RunOptions,
    say: Say | None = None,
    on_job: Callable[[dict[str, Any], int, int], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the study at ``study_path``; returns ``results.json``'s content."""
    say = say or (lambda _m: None)
    if opts.backend not in BACKENDS:
        raise InputError(f"--backend {opts.backend!r} is not one of {', '.join(BACKENDS)}")
    if opts.jobs < 1:
        raise InputError(f"--jobs {opts.jobs} must be at least 1")
    address = opts.address or os.environ.get("RAY_ADDRESS")
    if opts.backend == "ray" and address:
        check_address(address)  # before any work: a dead cluster is one line, exit 1
    study = load_study(study_path)
    started = time.perf_counter()
    p = plan(study, say)
    _prepare_out(opts.out, study, opts.resume)
    save_jobs(opts.out, p.jobs, p.labels, p.missing)
    swept = sweep_scratch(opts.out)
    if swept:
        say(f"removed {swept} unfinished job folder(s) of an earlier run")
    threads = threads_per_job(opts.jobs)
    private = None
    stream_caches = None
    if opts.frame_cache:
        folder = opts.cache or opts.out / "cache"
        caches = build_caches(p, folder, opts.jobs * threads, say)
        if study.train.streams:
            t0 = time.perf_counter()
            stream_caches = build_stream_caches(p, folder, opts.jobs * threads, say)
            log.info("stream caches ready in %.1f s", time.perf_counter() - t0)
    else:  # benchmarks: every job decodes its own clips (and streams)
        caches = None
        private = {
            "samples": {k: (v.sample, v.label) for k, v in p.samples.items()},
            "roots": {k: str(v) for k, v in study.data.items()},
            "specs": p.specs,
        }
    todo = [j for j in p.jobs if not (opts.resume and status(j, opts.out) == "done")]
    say(
        f"{len(p.folds)} folds x {len(study.model)} models x {len(study.train.seeds)} seeds = "
        f"{len(p.jobs)} jobs; {len(p.jobs) - len(todo)} already done, {len(todo)} to run "
        f"({opts.backend}, {opts.jobs} at a time, {threads} torch thread(s) each)"
    )
    ctx = Context(
        entry=ENTRY,
        out=str(opts.out),
        threads=threads,
        gpus=opts.gpus,
        options={
            "study": json.loads(study.model_dump_json()),
            "labels": p.labels,
            "caches": caches,
            "stream_caches": stream_caches,
            "private_cache": private,
            "feature_cache": opts.feature_cache,
        },
    )
    for i, summary in enumerate(
        run_jobs(
            todo,
            ctx,
            backend=opts.backend,
            n_jobs=opts.jobs,
            address=opts.address,
            retries=opts.retries,
        ),
        1,
    ):
        if on_job is not None:
            on_job(summary, i, len(todo))
    results = collect(p.jobs, opts.out, study.protocol.kind, p.labels, p.missing)
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def check_folds(folds: Sequence[FoldSpec]) -> None:
    """No test subject in any fold's training or validation subjects (asserted per run)."""
    for f in folds:
        leak = set(f.test_subjects) & (set(f.train_subjects) | set(f.validation_subjects))
        if leak:
            raise DataError(f"fold {f.id}: test subjects {sorted(leak)} also train or validate")
