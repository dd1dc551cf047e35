"""``edge-mer demo``: the embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge_mer.cli.common import StageLog, console, errors


@errors
def demo(
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Working folder (replaced if an earlier demo made it)."),
    ] = Path("edge-mer-demo"),
    seed: Annotated[int, typer.Option(help="Seed for clips and training.")] = 0,
) -> None:
    """Synthetic clips and streams -> tiny CNN-LSTM -> convert --int8 -> live events against
    ground truth on unseen subjects. No camera, no dataset."""
    from edge_mer.errors import require

    needs = ("torch", "onnx", "onnxruntime", "safetensors", "cv2")
    require(*needs, purpose="edge-mer demo", host=True)
    from edge_mer.cli.convert_cmd import print_summary
    from edge_mer.convert.demo import run_demo

    result = run_demo(out, seed=seed, say=StageLog())
    t = result["train"]
    console.print()
    streams = t.get("streams") or 0
    console.print(
        f"[bold]edge-mer demo[/bold]: trained on {t['clips']} synthetic clips and {streams} "
        f"streams of the training subjects in {t['seconds']} s (train accuracy "
        f"{t['stage2_train_accuracy']:.3f})"
    )
    sp = t.get("spotter")
    if sp:
        st, on = sp["settings"], sp["chosen_on"]
        console.print(
            "  spotter    chosen on the training streams (micro F1 "
            f"{on['f1']:.2f} there): " + ", ".join(f"{k} {v}" for k, v in st.items()),
            markup=False,
        )
    print_summary(result["manifest"], result["bundle"])
    acc = result["accuracy"]
    for graph, title in (("encoder", "FP32"), ("encoder_int8", "INT8")):
        if graph in acc:
            s = acc[graph]
            console.print(
                f"  {title} test   UF1 {s['uf1']:.3f}, UAR {s['uar']:.3f}, accuracy "
                f"{s['accuracy']:.3f} on {acc['windows']} clips of unseen synthetic "
                "subjects (MEGC metrics, streamed as on the device)"
            )
    print_live(result["spot"], result["spot_results"], result["events_dir"])
    console.print(
        f"\nnext: edge-mer inspect {result['bundle']}\n"
        f"      edge-mer run --bundle {result['bundle']} --source "
        "'synthetic://?seconds=30&seed=1' --events events.jsonl\n"
        f"      edge-mer spot-eval {result['bundle']}"
    )


def print_live(spot: dict, results: list, events_dir: Path) -> None:
    """The live pipeline's events against ground truth on the first stream, then the
    figures of every stream (never a bare event count)."""
    from edge_mer.bench.spotting_report import summary_lines, timeline_lines

    first = results[0]
    n_truth = sum(1 for t in first.stream.truth if t.kind == "micro")
    console.print(
        f"  live       `edge-mer run`'s pipeline on {len(results)} streams of unseen synthetic "
        f"subjects (events in {events_dir}/); {first.stream.name}, {first.stream.seconds:g} s, "
        f"{n_truth} micro-expressions:",
        markup=False,
    )
    for line in timeline_lines(first.stream, first.records, spot.get("iou", 0.5)):
        console.print(f"    {line}", markup=False)
    for line in summary_lines(spot):
        console.print(f"  {line}", markup=False)
    stages = first.extra.get("stages", {})
    if stages:
        console.print(
            "  stages     "
            + ", ".join(f"{k} {v['p50_ms']:.3f}" for k, v in stages.items())
            + " ms (p50, first stream)",
            markup=False,
        )
