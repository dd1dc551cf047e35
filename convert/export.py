"""Export a protocol model to the bundle's three ONNX graphs (DESIGN §3).

Tensor names are fixed: encoder ``frames`` -> ``features``; step ``features`` + each state
``S`` -> ``logits`` + ``S_next``; clip ``clip`` -> ``logits``. The batch axis is dynamic
everywhere; the clip graph's time axis is fixed at the model's window.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edge_mer.convert.checkpoint import LoadedModel
from edge_mer.errors import ModelProtocolError, VerificationError

log = logging.getLogger(__name__)

OPSET = 17


@dataclass(frozen=True)
class GraphIO:
    """Names and shapes (``None`` = dynamic batch) of one graph's inputs and outputs."""

    inputs: dict[str, list[int | str]]
    outputs: dict[str, list[int | str]]
    input_dtypes: dict[str, str]


class EncoderGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.encode(frames)


class StepGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, nxt = self.model.step(features, tuple(states))
        if isinstance(nxt, torch.Tensor):
            nxt = (nxt,)
        return (logits, *nxt)


class ClipGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.model(clip)


def state_shapes(loaded: LoadedModel) -> list[tuple[int, ...]]:
    """Per-state shapes without the batch axis, from ``init_state(2)``."""
    with torch.no_grad():
        st = loaded.model.init_state(2)
    st = (st,) if isinstance(st, torch.Tensor) else tuple(st)
    for name, t in zip(loaded.state_names, st, strict=True):
        if t.ndim == 0 or t.shape[0] != 2:
            raise ModelProtocolError(
                f"init_state(2) returned state {name!r} of shape "
                f"{tuple(t.shape)}: state must be batch-first [N, ...]"
            )
        if torch.count_nonzero(t):
            raise ModelProtocolError(
                f"init_state returned a non-zero state {name!r}: the "
                "on-device state cache starts from zeros"
            )
    return [tuple(t.shape[1:]) for t in st]


def example_inputs(loaded: LoadedModel, batch: int = 2) -> dict[str, dict[str, torch.Tensor]]:
    """Deterministic example inputs for the three graphs; the step's states are reached by
    stepping the model from zeros over ``window - 1`` random feature rows."""
    spec = loaded.spec
    g = torch.Generator().manual_seed(1234)
    frame_shape = (spec["height"], spec["width"], spec["channels"])
    frames = torch.randint(0, 256, (batch, *frame_shape), dtype=torch.uint8, generator=g)
    clip = torch.randint(
        0, 256, (batch, spec["window"], *frame_shape), dtype=torch.uint8, generator=g
    )
    with torch.no_grad():
        feats = loaded.model.encode(frames)
        state_shapes(loaded)  # checks batch-first, zero init
        # States the step can actually reach: from zeros over random features (a random
        # state may be one no input sequence produces, e.g. an attention sum below zero).
        state = _as_tuple(loaded.model.init_state(batch))
        for _ in range(max(1, spec["window"] - 1)):
            _, state = loaded.model.step(torch.randn(feats.shape, generator=g), state)
            state = _as_tuple(state)
    step_in = {"features": torch.randn(feats.shape, generator=g)}
    for name, value in zip(loaded.state_names, state, strict=True):
        step_in[name] = value.detach().clone().contiguous()
    return {"encoder": {"frames": frames}, "step": step_in, "clip": {"clip": clip}}


def _as_tuple(state: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return (state,) if isinstance(state, torch.Tensor) else tuple(state)


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    graph: str,
) -> str:
    """Export with the TorchScript exporter (fast); fall back to the dynamo exporter for
    models it cannot trace. Returns which exporter wrote the graph."""
    dynamic = {n: {0: "batch"} for n in (*inputs, *outputs)}
    sink = io.StringIO()
    errors: list[str] = []
    for dynamo in (False, True):
        kwargs: dict = {"dynamic_axes": dynamic}
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=65536)
            # Keyed by the wrappers' parameter names; the step's states are its *varargs.
            shapes: dict = {inputs[0]: {0: batch}}
            if len(inputs) > 1:
                shapes["states"] = tuple({0: batch} for _ in inputs[1:])
            kwargs = {"dynamic_shapes": shapes}
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module,
                    args,
                    str(path),
                    input_names=inputs,
                    output_names=outputs,
                    opset_version=OPSET,
                    dynamo=dynamo,
                    **kwargs,
                )
            return "dynamo" if dynamo else "torchscript"
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            errors.append(f"{type(exc).__name__}: {first[:300]}")
            log.info(
                "%s exporter failed on the %s graph: %s",
                "dynamo" if dynamo else "TorchScript",
                graph,
                first,
            )
    raise VerificationError(
        f"exporting the {graph} graph to ONNX failed: TorchScript "
        f"exporter: {errors[0]}; dynamo exporter: {errors[-1]}"
    )


def export_graphs(loaded: LoadedModel, out_dir: Path) -> dict[str, GraphIO]:
    """Write ``encoder.onnx``, ``step.onnx`` and ``clip.onnx`` into ``out_dir``, checked."""
    import onnx

    model = loaded.model.eval()
    ex = example_inputs(loaded)
    names = loaded.state_names
    spec = loaded.spec
    feat_dim = int(model.encode(ex["encoder"]["frames"]).shape[1])
    shapes = state_shapes(loaded)
    frame = [spec["height"], spec["width"], spec["channels"]]
    k = len(loaded.labels)
    ios = {
        "encoder": GraphIO(
            {"frames": ["batch", *frame]}, {"features": ["batch", feat_dim]}, {"frames": "uint8"}
        ),
        "step": GraphIO(
            {
                "features": ["batch", feat_dim],
                **{n: ["batch", *s] for n, s in zip(names, shapes, strict=True)},
            },
            {
                "logits": ["batch", k],
                **{f"{n}_next": ["batch", *s] for n, s in zip(names, shapes, strict=True)},
            },
            {"features": "float32", **dict.fromkeys(names, "float32")},
        ),
        "clip": GraphIO(
            {"clip": ["batch", spec["window"], *frame]}, {"logits": ["batch", k]}, {"clip": "uint8"}
        ),
    }
    # The wrappers must be in eval mode too: the exporter restores each module's mode
    # afterwards, recursively, and a training-mode wrapper would flip the model back.
    modules = {
        "encoder": EncoderGraph(model).eval(),
        "step": StepGraph(model).eval(),
        "clip": ClipGraph(model).eval(),
    }
    with torch.no_grad():
        for graph, io_ in ios.items():
            path = out_dir / f"{graph}.onnx"
            args = tuple(ex[graph][n] for n in io_.inputs)
            exporter = _export(
                modules[graph], args, path, list(io_.inputs), list(io_.outputs), graph
            )
            try:
                onnx.checker.check_model(str(path), full_check=True)
            except Exception as exc:
                raise VerificationError(f"{graph}.onnx fails onnx.checker: {exc}") from None
            log.info(
                "exported %s (%d bytes, %s exporter)", path.name, path.stat().st_size, exporter
            )
    model.eval()
    return ios
