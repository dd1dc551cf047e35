"""Why a reference subtracted from the features costs INT8 accuracy, in figures.

For a bundle with an FP32 and an INT8 encoder, on cached stream frames (``exp_streams.py``):

- ``raw``: RMS of the FP32 features ``f`` over all frames and dimensions;
- ``motion``: RMS of ``f_t - f_(t-k)`` (k = T - 1, the frame a window-start reference
  holds), i.e. the signal a reference-relative model reads;
- ``dc``: RMS over dimensions of each stream's mean feature, minus the mean over streams
  (how much of ``f`` is who the subject is);
- ``err``: RMS of ``f_int8 - f_fp32`` (quantization error of the features);
- ``err_motion``: RMS of the error of the difference, ``(f8_t - f8_(t-k)) - (f_t - f_(t-k))``.

- ``event``: RMS of ``f(apex) - f(onset)`` over the micro-expressions (the motion signal
  proper) and ``err_event``, the INT8 error of that difference.

``err / raw`` is the error a model reading raw features sees; ``err_motion / motion`` the
one a reference-relative model sees. Each quantized layer's input range (from the INT8
graph's scales: 127 x scale) is listed too.

    .venv/bin/python benchmarks/spotting/exp_int8.py BUNDLE --cache CACHE [--graph encoder_int8]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from exp_eval import OrtModel, load_cached, softmax

from edge_mer.bundle import Bundle
from edge_mer.streaming import ort_session


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def feats(session, frames: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [session.run(None, {"frames": frames[i : i + 512]})[0] for i in range(0, len(frames), 512)]
    )


def input_ranges(path: Path) -> list[dict]:
    """Per QuantizeLinear node: the tensor it quantizes and its range (127 x scale)."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    init = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    out = []
    for n in g.node:
        if n.op_type == "QuantizeLinear" and n.input[1] in init and n.input[0] not in init:
            scale = init[n.input[1]]
            if scale.size == 1:
                out.append({"tensor": n.input[0], "range": round(float(scale) * 127, 4)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--streams", nargs="+", default=["eval-50000"])
    ap.add_argument("--graph", default="encoder_int8")
    args = ap.parse_args(argv)
    b = Bundle.open(args.bundle)
    k = int(b.input["window"]) - 1
    f32 = ort_session(b.graph_path("encoder"))
    i8 = ort_session(b.graph_path(args.graph))
    raws, motions, errs, emots, means, events, eevents = [], [], [], [], [], [], []
    for s in load_cached(args.cache, args.streams):
        a, q = feats(f32, s.frames), feats(i8, s.frames)
        raws.append(a)
        errs.append(q - a)
        motions.append(a[k:] - a[:-k])
        emots.append((q[k:] - q[:-k]) - (a[k:] - a[:-k]))
        means.append(a.mean(0))
        d = s.raw
        for on, ap, kind in zip(d["ev_onset"], d["ev_apex"], d["ev_kind"], strict=True):
            if kind != 0:
                continue
            i, j = np.searchsorted(s.ts, on), np.searchsorted(s.ts, ap)
            j = min(j, len(s.ts) - 1)
            events.append(a[j] - a[i])
            eevents.append((q[j] - q[i]) - (a[j] - a[i]))
    m = np.stack(means)
    out = {
        "bundle": str(args.bundle),
        "graph": args.graph,
        "raw": rms(np.concatenate(raws)),
        "motion": rms(np.concatenate(motions)),
        "dc": rms(m - m.mean(0)),
        "err": rms(np.concatenate(errs)),
        "err_motion": rms(np.concatenate(emots)),
        "event": rms(np.stack(events)),
        "err_event": rms(np.stack(eevents)),
        "in_float": b.manifest.get("graphs", {}).get(args.graph, {}).get("float_layers"),
        "ranges": input_ranges(b.graph_path(args.graph)),
    }
    # Top-1 agreement INT8 vs FP32 over every window of the streams (what the spotter sees).
    fp, q8 = OrtModel(args.bundle, "encoder"), OrtModel(args.bundle, args.graph)
    agree, n, maxdiff = 0, 0, 0.0
    for s in load_cached(args.cache, args.streams):
        pa = softmax(fp.window_logits(fp.features(s.frames)))
        pb = softmax(q8.window_logits(q8.features(s.frames)))
        agree += int((pa.argmax(1) == pb.argmax(1)).sum())
        n += len(pa)
        maxdiff = max(maxdiff, float(np.abs(pa - pb).max()))
    out["stream_windows"] = n
    out["stream_top1_agreement"] = agree / n
    out["stream_max_prob_diff"] = maxdiff
    out["err_over_raw"] = out["err"] / out["raw"]
    out["err_motion_over_motion"] = out["err_motion"] / out["motion"]
    out["err_event_over_event"] = out["err_event"] / out["event"]
    out["event_over_raw"] = out["event"] / out["raw"]
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
