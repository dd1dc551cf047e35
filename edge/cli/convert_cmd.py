"""``edge-mer convert``, ``edge-mer train`` and ``edge-mer inspect``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edge_mer.cli.common import StageLog, console, errors


@errors
def convert(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint: .safetensors, .pt or .pth.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle directory to write.")],
    int8: Annotated[
        bool, typer.Option("--int8", help="Also write a calibrated INT8 encoder.")
    ] = False,
    calib: Annotated[
        Path | None,
        typer.Option(
            help="Calibration clips: a video, a folder of videos or frame folders, or a CASME II "
            "root. Used for verification too."
        ),
    ] = None,
    calib_method: Annotated[str, typer.Option(help="minmax, entropy or percentile.")] = "entropy",
    holdout: Annotated[
        float, typer.Option(help="Share of calibration clips held out for the INT8-vs-FP32 check.")
    ] = 0.25,
    min_agreement: Annotated[
        float,
        typer.Option(
            help="Minimum INT8-vs-FP32 top-1 agreement on held-out clips; below it the most "
            "sensitive layers stay in float."
        ),
    ] = 0.98,
    model_factory: Annotated[
        str | None,
        typer.Option(
            help="Your architecture: FILE.py:function or package.module:function, called as "
            "function(config: dict) -> nn.Module."
        ),
    ] = None,
    model_config: Annotated[
        Path | None,
        typer.Option(help="JSON config passed to the model factory (overrides the checkpoint's)."),
    ] = None,
    trust_checkpoint: Annotated[
        bool,
        typer.Option(
            "--trust-checkpoint",
            help="Allow full unpickling of a .pt file. It can run "
            "arbitrary code: only for files you made yourself.",
        ),
    ] = False,
    name: Annotated[str | None, typer.Option(help="Bundle name (default: file stem).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty --out.")] = False,
    engine: Annotated[
        bool,
        typer.Option("--engine", help="Also build TensorRT engines (only where TensorRT imports)."),
    ] = False,
) -> None:
    """Checkpoint -> verified ONNX graphs (encoder, step, clip) -> INT8 encoder -> bundle."""
    from edge_mer.errors import require

    needs = ("torch", "onnx", "onnxruntime", "safetensors") + (("cv2",) if calib else ())
    require(*needs, purpose="edge-mer convert", host=True)
    from edge_mer.convert.pipeline import ConvertOptions
    from edge_mer.convert.pipeline import convert as run_convert

    opts = ConvertOptions(
        int8=int8,
        calib=calib,
        calib_method=calib_method,
        holdout=holdout,
        min_agreement=min_agreement,
        factory=model_factory,
        model_config=model_config,
        trust_checkpoint=trust_checkpoint,
        force=force,
        name=name,
    )
    manifest = run_convert(checkpoint, out, opts, StageLog())
    print_summary(manifest, out)
    if engine:
        from edge_mer.cli.engine_cmd import build_engine

        build_engine(out)


def print_summary(manifest: dict, path: Path) -> None:
    """The verification figures of a bundle, as a short report (figures a manifest does
    not carry are left out)."""
    v = manifest.get("verification") or {}
    from rich.markup import escape

    console.print(f"[bold]{escape(str(manifest['name']))}[/bold]  {escape(str(path))}")
    inp = manifest["input"]
    console.print(
        f"  input      {inp['height']}x{inp['width']}x{inp['channels']} uint8, "
        f"{inp['fps']:g} fps, window {inp['window']} frames; "
        f"labels {', '.join(manifest['labels'])}",
        markup=False,
    )
    kind = manifest.get("state_kind", "recurrent")
    cost = manifest.get("cost")
    if cost:

        def n(key: str) -> str:
            return f"{cost[key]:,}" if cost.get(key) is not None else "?"

        rows = cost.get("step_rows_per_frame")
        console.print(
            f"  state      {kind} state, {n('step_rows_per_frame')} step row"
            f"{'s' * (rows != 1)} per frame per track, "
            f"{n('state_bytes_per_track')} bytes per track"
        )
        console.print(
            f"  cost       {n('params')} parameters; MACs: encoder "
            f"{n('encoder_macs_per_frame')} per frame, step {n('step_macs')} per row"
        )
    else:
        console.print(f"  state      {kind}")
    if "window" in v:
        w = v["window"]
        console.print(
            f"  window     claim checked: histories of {w['histories'][0]} and "
            f"{w['histories'][1]} frames end {w['max_abs_between_histories']:.2e} apart, "
            f"{w['max_abs_vs_clip']:.2e} from the clip graph"
        )
    fp32 = v.get("fp32") or {}
    if fp32.get("max_abs_pytorch_vs_onnx") is not None:
        console.print(
            f"  FP32       max |PyTorch - ONNX| {fp32['max_abs_pytorch_vs_onnx']:.2e}, "
            f"max |streaming - clip| {fp32.get('max_abs_streaming_vs_clip') or 0:.2e} "
            f"(tolerance {fp32.get('atol') or 0:g}, {fp32.get('calibration_windows') or 0} "
            "calibration windows)"
        )
    q = v.get("int8") or {}
    if q.get("top1_agreement") is not None:
        floats = q.get("float_layers") or []
        kept = f", {len(floats)} layer(s) kept in float" if floats else ""
        console.print(
            f"  INT8       top-1 agreement {q['top1_agreement']:.3f} on "
            f"{q.get('held_out_windows')} held-out windows (min {q.get('min_agreement')}), "
            f"max prob diff {q.get('max_prob_diff') or 0:.3f}{kept}"
        )
        lat = q.get("encoder_latency_ms") or {}
        if lat:
            parts = [f"{k} {lat[k]:.3f} ms" for k in lat]
            console.print(f"  encoder    {', '.join(parts)} (ONNX Runtime CPU, batch 1, median)")
    spotter = manifest.get("spotter") or {}
    if spotter.get("settings"):
        st, on = spotter["settings"], spotter.get("chosen_on") or {}
        subjects = on.get("subjects") or []
        span = f"subjects {subjects[0]}-{subjects[-1]}" if subjects else "its training subjects"
        console.print(
            f"  spotter    on {st.get('threshold_on')} / off {st.get('threshold_off')}, "
            f"smoothing {st.get('smoothing_frames')}, lag {st.get('lag_frames')} frames, "
            f"min {st.get('min_duration_ms')} ms"
            + (
                f", macro veto {st['macro_veto']} held {st.get('hold_ms', 0)} ms"
                if st.get("macro_veto", 1.0) < 1.0
                else ""
            )
            + f": chosen on {on.get('streams', '?')} training "
            f"streams ({span}; micro F1 {on.get('f1', 0):.2f} there); `edge-mer run` uses "
            "them unless the config sets [spotter]",
            markup=False,
        )
    targets = manifest.get("targets") or {}
    if targets:
        console.print(f"  targets    {', '.join(f'{k}: {g}' for k, g in targets.items())}")


@errors
def inspect(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Manifest, file hashes and verification figures of a bundle."""
    from edge_mer.bundle import Bundle

    b = Bundle.open(bundle)
    if as_json:
        typer.echo(json.dumps(b.manifest, indent=2))
        return
    print_summary(b.manifest, b.path)
    for name, entry in b.files().items():
        console.print(
            f"  {name:<18} {entry['path']:<26} {entry.get('bytes', 0) / 1024:9.1f} KiB  "
            f"sha256 {entry['sha256'][:12]}… ok"
        )
    console.print(
        f"  manifest   sha256 {b.manifest_sha256[:12]}…, created "
        f"{b.manifest.get('created', '?')}, versions "
        + ", ".join(f"{k} {v}" for k, v in b.manifest.get("versions", {}).items())
    )


@errors
def train(
    clips: Annotated[Path, typer.Argument(help="Clips in the CASME II layout.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint to write (.safetensors).")],
    arch: Annotated[
        str | None,
        typer.Option(
            help="Registry architecture: cnn_lstm, cnn_gru, cnn_attn_lstm, cnn_transformer, "
            "cnn_tcn (overrides the config's arch)."
        ),
    ] = None,
    model_config: Annotated[
        Path | None,
        typer.Option(help="JSON model config (see edge_mer.convert.registry)."),
    ] = None,
    model_factory: Annotated[
        str | None,
        typer.Option(help="Your own architecture: FILE.py:function or package.module:function."),
    ] = None,
    cnn_epochs: Annotated[int, typer.Option(help="Stage 1 (CNN on frames) epochs.")] = 8,
    head_epochs: Annotated[
        int, typer.Option("--head-epochs", "--rnn-epochs", help="Stage 2 (temporal head) epochs.")
    ] = 20,
    finetune_epochs: Annotated[
        int, typer.Option(help="End-to-end fine-tune epochs after stage 2 (0 = off).")
    ] = 0,
    selection: Annotated[
        str,
        typer.Option(
            help="fixed (keep the last epoch) or inner-val (the best epoch on --val-subjects)."
        ),
    ] = "fixed",
    val_subjects: Annotated[
        str | None,
        typer.Option(help="Comma-separated subjects held out as the validation set."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    threads: Annotated[
        int | None, typer.Option(help="Torch threads (fixed for reproducible runs).", min=1)
    ] = None,
    no_streams: Annotated[
        bool,
        typer.Option(
            "--no-streams",
            help="Ignore CLIPS/streams/ (the continuous streams `edge-mer synth` writes): "
            "train on the clips alone.",
        ),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out.")] = False,
) -> None:
    """Two-stage training (CNN on frames, then the temporal head on cached features), on the
    clips and on the streams in CLIPS/streams/ when there are some: they teach the model
    what a stream holds between micro-expressions, and the spotter's settings are chosen
    on them (saved with the checkpoint; `edge-mer convert` puts them in the bundle)."""
    from edge_mer.errors import InputError, require

    require("torch", "safetensors", "cv2", purpose="edge-mer train", host=True)
    from edge_mer.convert.checkpoint import read_json
    from edge_mer.convert.train import TrainOptions
    from edge_mer.convert.train import train as run_train

    if out.exists() and not force:
        raise InputError(f"--out {str(out)!r} exists; pass --force to overwrite it")
    if cnn_epochs < 1 or head_epochs < 1 or finetune_epochs < 0:
        raise InputError("--cnn-epochs and --head-epochs must be at least 1, --finetune-epochs 0+")
    config = read_json(model_config, "--model-config") if model_config else {}
    if arch is not None:
        if model_factory is not None:
            raise InputError("--arch picks a registry model; --model-factory builds your own")
        config["arch"] = arch
    held = [s.strip() for s in (val_subjects or "").split(",") if s.strip()]
    if selection == "inner-val" and not held:
        raise InputError(
            "--selection inner-val needs --val-subjects (subjects held out of training)"
        )
    opts = TrainOptions(
        config=config,
        cnn_epochs=cnn_epochs,
        head_epochs=head_epochs,
        finetune_epochs=finetune_epochs,
        selection=selection,
        seed=seed,
        threads=threads,
    )
    summary = run_train(
        clips,
        out,
        opts,
        StageLog(),
        val_subjects=held,
        factory=model_factory,
        streams=not no_streams,
    )
    best = summary["stage2"]["best_epoch"]
    streams = summary.get("streams") or 0
    on = f" and {streams} streams" if streams else ""
    console.print(
        f"trained {summary['arch']} on {summary['clips']} clips{on} ({summary['frames']} "
        f"frames, {summary['windows']} windows) in {summary['seconds']} s: train accuracy "
        f"stage 1 {summary['stage1_train_accuracy']:.3f}, stage 2 "
        f"{summary['stage2_train_accuracy']:.3f} (epoch {best} kept) -> {out}"
    )
