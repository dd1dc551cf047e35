"""The preprocessing's two orders to gray, side by side: resize the BGR crop then convert it
(edge-mer before 2026-12-01), or convert the crop then resize the gray crop (now).

For each case (frame size, crop box, model input) both orders run on the same random
frames, interleaved, with OpenCV's own calls (positional arguments, preallocated outputs,
as :class:`edge_mer.pipeline.preprocess.FramePreprocessor` calls them); reported: median µs
per frame of each, their ratio, and how the pixels differ (largest difference in gray
levels, share of pixels that differ). ``FramePreprocessor`` itself is timed too, and its
output is checked against the convert-first reference.

    python benchmarks/bench_preprocess.py [--rounds 7] [--number 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import timeit
from pathlib import Path

import numpy as np

# (name, frame H x W, crop (x, y, w, h) or None, model input H x W)
CASES = [
    ("bench replay: 128x128 frame, whole frame", (128, 128), None, (64, 64)),
    ("VGA camera, 240x240 face", (480, 640), (200, 120, 240, 240), (64, 64)),
    ("VGA camera, 400x400 face", (480, 640), (100, 50, 400, 400), (64, 64)),
    ("720p camera, 300x300 face, 112x112 input", (720, 1280), (500, 200, 300, 300), (112, 112)),
]


def run_case(frame_hw, box, out_hw, rounds: int, number: int, cv2) -> dict:
    from edge_mer.pipeline.preprocess import FramePreprocessor

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (*frame_hw, 3), dtype=np.uint8) for _ in range(8)]
    x, y, w, h = box if box is not None else (0, 0, frame_hw[1], frame_hw[0])
    crops = [f[y : y + h, x : x + w] for f in frames]
    oh, ow = out_hw
    dsize, area, code = (ow, oh), cv2.INTER_AREA, cv2.COLOR_BGR2GRAY
    small = np.empty((oh, ow, 3), np.uint8)
    gray = np.empty(crops[0].shape[:2], np.uint8)
    out = np.empty((oh, ow), np.uint8)
    pre = FramePreprocessor(oh, ow, 1)
    pre_out = np.empty((oh, ow, 1), np.uint8)
    k = [0]

    def resize_first() -> None:
        c = crops[k[0] & 7]
        k[0] += 1
        cv2.resize(c, dsize, small, 0, 0, area)
        cv2.cvtColor(small, code, out)

    def convert_first() -> None:
        c = crops[k[0] & 7]
        k[0] += 1
        cv2.cvtColor(c, code, gray)
        cv2.resize(gray, dsize, out, 0, 0, area)

    def preprocessor() -> None:
        f = frames[k[0] & 7]
        k[0] += 1
        pre(f, box, out=pre_out)

    times: dict[str, list[float]] = {"resize_first": [], "convert_first": [], "preprocessor": []}
    fns = {
        "resize_first": resize_first,
        "convert_first": convert_first,
        "preprocessor": preprocessor,
    }
    for r in range(rounds):
        order = list(fns)[r % 3 :] + list(fns)[: r % 3]  # rotate who goes first
        for name in order:
            times[name].append(timeit.timeit(fns[name], number=number) / number * 1e6)
    diffs, shares = [], []
    for f, c in zip(frames, crops, strict=True):
        a = cv2.cvtColor(cv2.resize(c, dsize, interpolation=area), code)
        b = cv2.resize(cv2.cvtColor(c, code), dsize, interpolation=area)
        assert (pre(f, box)[:, :, 0] == b).all(), "FramePreprocessor is not convert-first"
        d = np.abs(a.astype(np.int16) - b)
        diffs.append(int(d.max()))
        shares.append(float((d > 0).mean()))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "median_us": med,
        "convert_first_over_resize_first": med["convert_first"] / med["resize_first"],
        "max_gray_level_difference": max(diffs),
        "share_of_pixels_differing": statistics.mean(shares),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--number", type=int, default=2000, help="calls per timing")
    ap.add_argument("--threads", type=int, default=1, help="cv2.setNumThreads (0 = OpenCV's)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    import cv2

    if args.threads:
        cv2.setNumThreads(args.threads)
    rows = []
    print("| case | resize first µs | convert first µs | ratio | FramePreprocessor µs | "
          "max diff | pixels differing |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, frame_hw, box, out_hw in CASES:
        res = run_case(frame_hw, box, out_hw, args.rounds, args.number, cv2)
        rows.append({"case": name, "frame": frame_hw, "box": box, "input": out_hw, **res})
        m = res["median_us"]
        print(
            f"| {name} | {m['resize_first']:.2f} | {m['convert_first']:.2f} | "
            f"{res['convert_first_over_resize_first']:.2f} | {m['preprocessor']:.2f} | "
            f"{res['max_gray_level_difference']} | {100 * res['share_of_pixels_differing']:.1f}% |",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"opencv": cv2.__version__, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
