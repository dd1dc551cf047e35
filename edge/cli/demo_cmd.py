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
    """Synthetic clips -> tiny CNN-LSTM -> convert --int8 -> report. No camera, no dataset."""
    from edge_mer.errors import require

    needs = ("torch", "onnx", "onnxruntime", "safetensors", "cv2")
    require(*needs, purpose="edge-mer demo", host=True)
    from edge_mer.cli.convert_cmd import print_summary
    from edge_mer.convert.demo import run_demo

    result = run_demo(out, seed=seed, say=StageLog())
    t = result["train"]
    console.print()
    console.print(
        f"[bold]edge-mer demo[/bold]: trained on {t['clips']} synthetic clips in "
        f"{t['seconds']} s (train accuracy {t['stage2_train_accuracy']:.3f})"
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
    from edge_mer.cli.run_cmd import report

    live = result["live"]
    console.print(
        f"  live       {live.frames} frames of a synthetic stream -> "
        f"{live.events} events in {out / 'events.jsonl'}:"
    )
    report(live, result["live_stopped"])
    console.print(
        f"\nnext: edge-mer inspect {result['bundle']}\n"
        f"      edge-mer run --bundle {result['bundle']} --source "
        "'synthetic://?seconds=30' --events events.jsonl"
    )
