"""``edge-mer run``: the on-device pipeline, in the foreground or under systemd."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from edge_mer.cli.common import err_console, errors


@errors
def run(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Daemon config (TOML); see `edge-mer validate-config`."
        ),
    ] = None,
    bundle: Annotated[Path | None, typer.Option(help="Bundle folder (without --config).")] = None,
    source: Annotated[
        str | None,
        typer.Option(
            help="Source URI: synthetic://, file://clip.mp4, frames://dir, v4l2:///dev/video0, "
            "csi://0, gst://<pipeline>, picam://0 (without --config)."
        ),
    ] = None,
    events: Annotated[Path | None, typer.Option(help="Write events to this JSONL file.")] = None,
    frames: Annotated[int | None, typer.Option(help="Stop after N frames.", min=1)] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after S seconds.", min=0.0)] = None,
    face: Annotated[
        str | None,
        typer.Option(
            help="Face detector: haar, yunet, roi or none (default: none for synthetic://, "
            "else haar)."
        ),
    ] = None,
    runner: Annotated[str, typer.Option(help="auto, onnxruntime or tensorrt.")] = "auto",
    metrics: Annotated[
        str | None,
        typer.Option(help="Serve Prometheus metrics on HOST:PORT (without --config: off)."),
    ] = None,
) -> None:
    """Run the pipeline: camera -> face -> encoder -> state cache -> events.

    Runs until SIGTERM, the end of a finite source, --frames or --duration. Under systemd
    (NOTIFY_SOCKET set) it reports READY, WATCHDOG, STATUS and STOPPING.
    """
    from edge_mer.config import config_from_args, load_config
    from edge_mer.errors import InputError
    from edge_mer.service.daemon import Daemon
    from edge_mer.service.doctor import check_requirements

    if config is not None and (bundle is not None or source is not None):
        raise InputError("give either --config FILE or --bundle and --source, not both")
    if config is None and (bundle is None or source is None):
        raise InputError("edge-mer run needs --config FILE, or --bundle BUNDLE and --source URI")
    if frames is not None and duration is not None:
        raise InputError("give --frames or --duration, not both")

    def load():
        cfg = _load()
        check_requirements(cfg)  # one line naming the extra, before any runner is built
        return cfg

    def _load():
        if config is not None:
            return load_config(config)
        tables: dict = {
            "face": {
                "detector": face or ("none" if str(source).startswith("synthetic:") else "haar")
            }
        }
        tables["metrics"] = {"enabled": True, "bind": metrics} if metrics else {"enabled": False}
        return config_from_args(
            bundle, source, events=events, runner=runner, tables=tables, stdout=events is None
        )

    daemon = Daemon(load, frames=frames, seconds=duration, hard_stop=True)
    why = daemon.run()
    p = daemon.pipeline
    if p is None:
        return
    report(p, why)


def report(p, why: str) -> None:
    """A summary on stderr (stdout may be carrying the events)."""
    from edge_mer.pipeline.spotting_eval import (
        intervals_from_records,
        intervals_from_truth,
        latency_stats,
        score_events,
    )

    st = p.capture.stats()
    threads = getattr(p.encoder, "threads", None)  # ONNX Runtime's; TensorRT has none
    on = "" if threads is None else f" ({threads or 'default'} encoder thread(s))"
    err_console.print(
        f"stopped ({why}): {p.frames} frames, {p.model_frames} inferences at "
        f"{p.model_fps:g} fps, {p.events} events, {st.drops} dropped, "
        f"runner {p.selection.kind}{on}"
    )
    for stage, s in p.clock.summary().items():
        err_console.print(
            f"  {stage:<10} p50 {s['p50_ms']:7.3f} ms  p95 {s['p95_ms']:7.3f} ms"
            f"  max {s['max_ms']:7.3f} ms  (n={s['count']})"
        )
    truth = getattr(p.source, "events", None)
    if truth is not None:
        done = p.frames / max(1.0, p.source.fps or 1.0)
        truth = [e for e in truth if e.offset_s <= done]
        micro = score_events(
            intervals_from_records(p.records, types=["micro_expression"]),
            intervals_from_truth(truth, kinds=["micro"]),
        )
        lat = latency_stats(p.records)
        err_console.print(
            f"  synthetic ground truth ({len(truth)} events so far): micro-expressions "
            f"precision {micro.precision:.2f}, recall {micro.recall:.2f}, F1 {micro.f1:.2f} "
            f"(IoU >= 0.5); latency p50 {lat.get('p50_ms') or 0:.1f} ms"
        )
    sys.stderr.flush()
