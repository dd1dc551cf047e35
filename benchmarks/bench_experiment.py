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

Reported: wall seconds per variant, seconds per fold and per training clip (baseline), the
saving of each cache (variant / baseline), job throughput, and the extrapolation to a full
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subjects", type=int, default=6)
    ap.add_argument("--cnn-epochs", type=int, default=6)
    ap.add_argument("--head-epochs", type=int, default=30)
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
        variants: dict[str, dict | None] = {}
        variants["baseline"] = _local(study, work / "baseline")
        variants["no-frame-cache"] = _local(study, work / "nfc", frame_cache=False)
        variants["no-feature-cache"] = _local(study, work / "nft", feature_cache=False)
        variants["jobs-2"] = _local(study, work / "j2", jobs=2)
        variants["ray"] = None if args.skip_ray else _ray(study, work / "ray", work)
        fold = json.loads((work / "baseline" / "jobs.json").read_text())["jobs"]
        train_clips = sum(len(j["fold"]["train"]) for j in fold)
        base = variants["baseline"]
        assert base is not None
        per_clip = base["seconds"] / train_clips
        report = {
            "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
            "study": {
                "subjects": args.subjects,
                "folds": len(fold),
                "train_clips_over_folds": train_clips,
                "cnn_epochs": args.cnn_epochs,
                "head_epochs": args.head_epochs,
            },
            "variants": variants,
            "seconds_per_fold": base["seconds"] / len(fold),
            "seconds_per_training_clip": per_clip,
            "frame_cache_saving": variants["no-frame-cache"]["seconds"] / base["seconds"],  # type: ignore[index]
            "feature_cache_saving": variants["no-feature-cache"]["seconds"] / base["seconds"],  # type: ignore[index]
            "jobs2_speedup": base["seconds"] / variants["jobs-2"]["seconds"],  # type: ignore[index]
            "casme2_loso_estimate_s": per_clip * CASME2_MEGC3_CLIPS * (CASME2_FOLDS - 1),
        }
        if args.json:
            args.json.write_text(json.dumps(report, indent=1) + "\n")
        lines = [
            "| variant | seconds | jobs done | vs baseline |",
            "|---|---:|---:|---:|",
        ]
        for name, v in variants.items():
            if v is None:
                lines.append(f"| {name} | skipped | | |")
                continue
            lines.append(
                f"| {name} | {v['seconds']:.1f} | {v['done']} | "
                f"{v['seconds'] / base['seconds']:.2f}x |"
            )
        lines += [
            "",
            f"- {len(fold)} folds, {train_clips} training clips over all folds: "
            f"{report['seconds_per_fold']:.1f} s per fold, "
            f"{per_clip:.2f} s per training clip (baseline, --jobs 1).",
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


if __name__ == "__main__":
    main()
