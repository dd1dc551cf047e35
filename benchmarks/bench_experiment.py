"""What an ``edge-mer experiment`` costs, measured side by side in one run.

One LOSO study of the reference model (``cnn_lstm``, 64x64 gray, window 12 at 50 fps) on a
synthetic CASME II copy (``--subjects`` subjects, 200 fps), run several ways from a cold
output folder each time (the frame cache too, except where it is shared on purpose):

- ``baseline``: the default (shared frame cache, stage-2 features cached), ``--jobs 1``;
- ``no-frame-cache``: every job decodes its own clips;
- ``no-feature-cache``: stage-2 features recomputed every epoch;
- ``jobs-2``: ``--jobs 2`` (1 torch thread per job);
- ``ray``: ``--backend ray --jobs 2`` on a real two-node Ray cluster on 127.0.0.1 inside a
  private network namespace (skipped where ``unshare -n`` is not allowed).

The local variants run ``--rounds`` times (default 3), their order rotated each round, and
the median is reported. Reported: wall seconds per variant, and from each job's
``metrics.json`` the seconds the jobs themselves took, their stage-1 and stage-2 training and
the stage-2 feature cache (so that each cache's saving is seen where it acts, not only in
the wall time that the cold first run and the neighbours blur); seconds per fold and per
training clip (baseline), job throughput, and the extrapolation to a full
CASME II LOSO (26 folds, 255 clips; the megc3 subset the reference model trains on is 147
clips) from the per-training-clip figure.

    .venv/bin/python benchmarks/bench_experiment.py --json benchmarks/results-experiment.json \\
        --markdown benchmarks/results-experiment.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edge_mer.calibration.synth_io import synthesize
from edge_mer.convert.experiment.runner import RunOptions, run_study

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "tests" / "convert" / "experiment" / "ray_cluster.sh"
STUDY = """\
[study]
name = "bench"
[data]
casme2 = "{root}"
[protocol]
kind = "loso"
dataset = "casme2"
label_map = "megc3"
face = "none"
[[model]]
name = "cnn-lstm"
arch = "cnn_lstm"
config = {{ input = {{ height = 64, width = 64, window = 12, fps = 50.0 }}, pool = 4, \
feature_dim = 32, hidden = 32 }}
[train]
cnn_epochs = {cnn_epochs}
head_epochs = {head_epochs}
seeds = [0]
selection = "inner-val"
[deploy]
int8 = true
"""
CASME2_CLIPS, CASME2_MEGC3_CLIPS, CASME2_FOLDS = 255, 147, 26


def _local(study: Path, out: Path, **kw: object) -> dict:
    started = time.perf_counter()
    results = run_study(study, RunOptions(out=out, **kw))  # type: ignore[arg-type]
    return {"seconds": time.perf_counter() - started, "done": results["jobs"]["done"]}


def _phases(out: Path) -> dict[str, float]:
    """Seconds summed over a run's jobs, from each job's metrics.json: the whole job, its
    stage-1 and stage-2 training, and the stage-2 feature cache."""
    sums = {"jobs": 0.0, "stage1": 0.0, "stage2": 0.0, "feature_cache": 0.0}
    for path in out.rglob("metrics.json"):
        m = json.loads(path.read_text())
        t = m.get("training") or {}
        sums["jobs"] += m["seconds"]
        sums["stage1"] += (t.get("stage1") or {}).get("seconds", 0.0)
        sums["stage2"] += (t.get("stage2") or {}).get("seconds", 0.0)
        sums["feature_cache"] += (t.get("feature_cache") or {}).get("seconds", 0.0)
    return sums


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def _ray(study: Path, out: Path, work: Path) -> dict | None:
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        return None
    logs = work / "ray-logs"
    logs.mkdir()
    cmd = [str(Path(sys.executable).parent / "edge-mer"), "experiment", "run", str(study)]
    cmd += ["--out", str(out), "--backend", "ray", "--jobs", "2", "-q"]
    bin_dir = str(Path(sys.executable).parent)
    started = time.perf_counter()
    proc = subprocess.Popen(
        ["unshare", "-n", "bash", str(CLUSTER), bin_dir, str(logs), "6398", *cmd],
        start_new_session=True,
    )
    try:
        proc.wait(timeout=3600)
    finally:
        for sig in (15, 9):
            try:
                os.killpg(proc.pid, sig)
                time.sleep(2)
            except ProcessLookupError:
                break
    seconds = time.perf_counter() - started
    done = json.loads((out / "results.json").read_text())["jobs"]["done"]
    return {"seconds": seconds, "done": done, "note": "includes starting the 2-node cluster"}


LOCAL = {
    "baseline": {},
    "no-frame-cache": {"frame_cache": False},
    "no-feature-cache": {"feature_cache": False},
    "jobs-2": {"jobs": 2},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subjects", type=int, default=6)
    ap.add_argument("--cnn-epochs", type=int, default=6)
    ap.add_argument("--head-epochs", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3, help="local variants, order rotated")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-experiment-"))
    try:
        synthesize(work / "data", layouts=("casme2",), subjects=args.subjects, size=(96, 96))
        study = work / "study.toml"
        study.write_text(
            STUDY.format(
                root=work / "data" / "casme2",
                cnn_epochs=args.cnn_epochs,
                head_epochs=args.head_epochs,
            )
        )
        names = list(LOCAL)
        runs: dict[str, list[dict]] = {n: [] for n in names}
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                out = work / f"{name}-{r}"
                run = _local(study, out, **LOCAL[name])  # type: ignore[arg-type]
                run["phases"] = _phases(out)
                runs[name].append(run)
                print(f"round {r + 1}: {name} {run['seconds']:.1f} s", flush=True)
                shutil.rmtree(out)
        variants: dict[str, dict | None] = {}
        for name, rs in runs.items():
            variants[name] = {
                "seconds": _median([x["seconds"] for x in rs]),
                "seconds_each": [round(x["seconds"], 2) for x in rs],
                "done": rs[0]["done"],
                "phases": {k: _median([x["phases"][k] for x in rs]) for k in rs[0]["phases"]},
            }
        variants["ray"] = None if args.skip_ray else _ray(study, work / "ray", work)
        base = variants["baseline"]
        assert base is not None
        nfc, nft, j2 = (variants[n] for n in ("no-frame-cache", "no-feature-cache", "jobs-2"))
        assert nfc and nft and j2
        folds = args.subjects
        train_clips = _train_clips(study)
        per_clip = base["seconds"] / train_clips
        report = {
            "machine": {
                "cores": os.cpu_count(),
                "python": sys.version.split()[0],
                "load_average_at_end": os.getloadavg(),
            },
            "study": {
                "subjects": args.subjects,
                "folds": folds,
                "train_clips_over_folds": train_clips,
                "cnn_epochs": args.cnn_epochs,
                "head_epochs": args.head_epochs,
                "rounds": args.rounds,
            },
            "variants": variants,
            "seconds_per_fold": base["seconds"] / folds,
            "seconds_per_training_clip": per_clip,
            # > 1: switching the cache off costs that much more (wall, and where it acts)
            "frame_cache_wall_ratio": nfc["seconds"] / base["seconds"],
            "frame_cache_jobs_ratio": nfc["phases"]["jobs"] / base["phases"]["jobs"],
            "feature_cache_wall_ratio": nft["seconds"] / base["seconds"],
            "feature_cache_stage2_ratio": nft["phases"]["stage2"]
            / (base["phases"]["stage2"] + base["phases"]["feature_cache"]),
            "jobs2_speedup": base["seconds"] / j2["seconds"],
            "casme2_loso_estimate_s": per_clip * CASME2_MEGC3_CLIPS * (CASME2_FOLDS - 1),
        }
        if args.json:
            args.json.write_text(json.dumps(report, indent=1) + "\n")
        lines = [
            "| variant | wall s (median) | each round | jobs' own s | stage 1 s | stage 2 s "
            "| feature cache s | wall vs baseline |",
            "|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for name, v in variants.items():
            if v is None:
                lines.append(f"| {name} | skipped | | | | | | |")
                continue
            ph = v.get("phases")
            each = ", ".join(f"{x:.1f}" for x in v.get("seconds_each", [v["seconds"]]))
            cols = (
                f"{ph['jobs']:.1f} | {ph['stage1']:.1f} | {ph['stage2']:.1f} | "
                f"{ph['feature_cache']:.1f}"
                if ph
                else " | | | "
            )
            lines.append(
                f"| {name} | {v['seconds']:.1f} | {each} | {cols} | "
                f"{v['seconds'] / base['seconds']:.2f}x |"
            )
        lines += [
            "",
            f"- {folds} folds, {train_clips} training clips over all folds: "
            f"{report['seconds_per_fold']:.1f} s per fold, "
            f"{per_clip:.2f} s per training clip (baseline, --jobs 1).",
            f"- Frame cache off: wall {report['frame_cache_wall_ratio']:.2f}x, the jobs' own "
            f"time {report['frame_cache_jobs_ratio']:.2f}x (each job decodes its clips; the "
            "baseline decodes once, before the jobs).",
            f"- Feature cache off: stage 2 {report['feature_cache_stage2_ratio']:.2f}x "
            "(features recomputed every epoch vs computed once), wall "
            f"{report['feature_cache_wall_ratio']:.2f}x.",
            f"- --jobs 2: {report['jobs2_speedup']:.2f}x the throughput of --jobs 1.",
            f"- Full CASME II LOSO (26 folds x ~{CASME2_MEGC3_CLIPS * 25 // 26} training "
            f"clips of the megc3 subset): about {report['casme2_loso_estimate_s'] / 60:.0f} "
            "min per model and seed at --jobs 1 on this machine.",
        ]
        text = "\n".join(lines) + "\n"
        if args.markdown:
            args.markdown.write_text(text)
        print(text)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _train_clips(study: Path) -> int:
    """Training clips summed over the study's folds (from its plan)."""
    from edge_mer.convert.experiment.runner import plan
    from edge_mer.convert.experiment.study import load_study

    return sum(len(j.fold.train) for j in plan(load_study(study)).jobs)


if __name__ == "__main__":
    main()
