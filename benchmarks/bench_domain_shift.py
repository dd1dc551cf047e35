"""Does the synthetic data reproduce the cross-dataset gap? Train on synthetic CASME II,
score held-out synthetic CASME II subjects and the synthetic SMIC-HS / VIS / NIR and SAMM
copies.

The real CASME II -> SMIC results are far below within-dataset LOSO results; the synthetic
layouts (``edge-mer synth --layout ...``) give every dataset its own subjects and camera
(``edge_mer.calibration.synth_domains``) so that protocols meet the same kind of gap here.

For each training seed: ``edge-mer train``'s library call on a synthetic CASME II copy
(``--train-subjects`` subjects, the demo model), ``convert`` to an FP32 bundle, then the
bundle's encoder + step (ONNX Runtime, streamed as on the device) on one window per clip
(``edge_mer.calibration.evaluate``) of each test copy. Every test copy has other subjects
than training (another seed, and each layout has its own population). Scores: UF1 / UAR /
WAR over the three emotion classes (negative, positive, surprise): CASME II's "others"
clips, which SMIC does not have, are left out so that the truth classes are the same; the
model may still answer "none".

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_domain_shift.py --json r.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_mer.bundle import Bundle
from edge_mer.calibration.evaluate import clip_windows, evaluate
from edge_mer.calibration.synth_io import synthesize
from edge_mer.convert.demo import DEMO_MODEL
from edge_mer.convert.pipeline import ConvertOptions, convert
from edge_mer.convert.train import TrainOptions, train

TESTS = ("casme2", "samm", "smic-hs", "smic-vis", "smic-nir")


def emotion_scores(bundle: Bundle, root: Path) -> dict:
    windows, truth = clip_windows(bundle, root)
    keep = truth != bundle.labels.index("none")
    res = evaluate(bundle, windows[keep], truth[keep], encoders=("encoder",))["encoder"]
    return {"clips": int(keep.sum()), **{k: res[k] for k in ("uf1", "uar", "war")}}


def run(args: argparse.Namespace, work: Path) -> dict:
    started = time.perf_counter()
    synthesize(
        work / "test",
        layouts=TESTS,
        subjects=args.test_subjects,
        clips_per_emotion=args.clips_per_emotion,
        size=(args.size, args.size),
        seed=args.seed + 1,
    )
    synthesize(
        work / "train",
        subjects=args.train_subjects,
        clips_per_emotion=args.clips_per_emotion,
        size=(args.size, args.size),
        seed=args.seed,
    )
    out: dict = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    out["seeds"] = {}
    for seed in range(args.seeds):
        ckpt = work / f"model-{seed}.safetensors"
        opts = TrainOptions(config=DEMO_MODEL, cnn_epochs=args.cnn_epochs, seed=seed)
        train(work / "train" / "casme2", ckpt, opts)
        convert(ckpt, work / f"bundle-{seed}", ConvertOptions(name=f"shift-{seed}"))
        bundle = Bundle.open(work / f"bundle-{seed}")
        out["seeds"][seed] = {t: emotion_scores(bundle, work / "test" / t) for t in TESTS}
        print(seed, json.dumps(out["seeds"][seed]), flush=True)
    out["mean"] = {
        t: {
            m: float(np.mean([s[t][m] for s in out["seeds"].values()]))
            for m in ("uf1", "uar", "war")
        }
        for t in TESTS
    }
    out["elapsed_s"] = round(time.perf_counter() - started, 1)
    return out


def markdown(res: dict) -> str:
    a = res["args"]
    lines = [
        f"Train: synthetic CASME II, {a['train_subjects']} subjects x {a['clips_per_emotion']} "
        f"clip(s) per emotion, demo model, {a['seeds']} training seed(s). Test: other "
        f"subjects ({a['test_subjects']} per copy); emotion clips only (negative / positive / "
        "surprise). FP32 bundle, ONNX Runtime, one window per clip.",
        "",
        "| test copy | clips | UF1 | UAR | WAR |",
        "|---|---|---|---|---|",
    ]
    first = next(iter(res["seeds"].values()))
    for t, m in res["mean"].items():
        name = "casme2 (held-out subjects)" if t == "casme2" else t
        lines.append(
            f"| {name} | {first[t]['clips']} | {m['uf1']:.3f} | {m['uar']:.3f} | {m['war']:.3f} |"
        )
    lines.append("")
    lines.append(f"Total {res['elapsed_s']:.0f} s.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-subjects", type=int, default=16)
    p.add_argument("--test-subjects", type=int, default=6)
    p.add_argument("--clips-per-emotion", type=int, default=2)
    p.add_argument("--size", type=int, default=128, help="rendered frame size (the model reads 64)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cnn-epochs", type=int, default=16)
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-mer-shift-") as tmp:
        res = run(args, Path(tmp))
    text = markdown(res)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
