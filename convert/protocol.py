"""The streaming model protocol (DESIGN §2), checked on a user's or a registry model.

:func:`model_spec` reads the attributes (labels, input_spec, state names), :func:`model_state_kind`
the optional ``state_kind``, and :func:`probe_protocol` runs ``encode``, a few ``step`` calls
and ``forward`` on zero inputs, turning a framework error into one line that says which call
failed on what.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edge_mer.errors import ModelProtocolError
from edge_mer.manifest import STATE_KINDS

__all__ = ["STATE_KINDS", "model_spec", "model_state_kind", "probe_protocol"]

_PROTOCOL = ("encode", "step", "init_state", "forward")
_PROBE_STEPS = 3  # a state that changes shape shows up within a few steps


def model_spec(model: nn.Module, origin: str) -> tuple[dict[str, Any], list[str], list[str]]:
    """Check ``model`` against the streaming protocol; return (input spec, labels, state names).

    Raises:
        ModelProtocolError: a protocol member is missing or has the wrong kind of value.
    """
    if not isinstance(model, nn.Module):
        raise ModelProtocolError(f"{origin} returned {type(model).__name__}, not a torch.nn.Module")
    missing = [m for m in _PROTOCOL if not callable(getattr(model, m, None))]
    if missing:
        raise ModelProtocolError(
            f"{origin} returned a {type(model).__name__} without "
            f"{missing}: see the --model-factory contract in README.md"
        )
    labels = getattr(model, "labels", None)
    if not isinstance(labels, (list, tuple)) or not labels:
        raise ModelProtocolError(f"{origin}: model.labels must be a non-empty list of names")
    raw = getattr(model, "input_spec", None)
    if raw is None:
        raise ModelProtocolError(
            f"{origin}: model.input_spec is missing (height, width, channels, fps, window)"
        )
    spec: dict[str, Any] = {}
    for key in ("height", "width", "channels", "fps", "window"):
        value = raw.get(key) if isinstance(raw, dict) else getattr(raw, key, None)
        if value is None:
            raise ModelProtocolError(f"{origin}: model.input_spec has no {key!r}")
        spec[key] = float(value) if key == "fps" else int(value)
    if spec["channels"] not in (1, 3):
        raise ModelProtocolError(f"{origin}: input_spec channels={spec['channels']!r}; use 1 or 3")
    with torch.no_grad():
        try:
            state = model.init_state(1)
        except Exception as exc:
            raise ModelProtocolError(
                f"{origin}: init_state(1) failed: {type(exc).__name__}: {exc}"
            ) from None
    if isinstance(state, torch.Tensor):
        state = (state,)
    if not isinstance(state, (tuple, list)) or not all(isinstance(s, torch.Tensor) for s in state):
        raise ModelProtocolError(f"{origin}: init_state must return a tuple of tensors")
    names = list(getattr(model, "state_names", None) or [f"state{i}" for i in range(len(state))])
    if len(names) != len(state):
        raise ModelProtocolError(
            f"{origin}: {len(names)} state_names for {len(state)} state tensors"
        )
    return spec, [str(x) for x in labels], names


def model_state_kind(model: nn.Module, origin: str) -> str:
    """The model's ``state_kind`` (``"recurrent"`` when it has none), checked."""
    kind = getattr(model, "state_kind", None) or "recurrent"
    if kind not in STATE_KINDS:
        raise ModelProtocolError(
            f"{origin}: model.state_kind={kind!r}; use 'recurrent' (the state depends on all "
            "history) or 'window' (it depends only on the last input_spec.window frames)"
        )
    return str(kind)


def probe_protocol(model: nn.Module, spec: dict[str, Any], n_labels: int, origin: str) -> None:
    """Run ``encode``, ``step`` and ``forward`` once on zero frames of the declared input spec.

    A model whose layers do not accept what its ``input_spec`` promises (say channels=1 and
    a first conv that expects 3) is the user's to fix: this turns the framework's error
    into one line naming the input shape, before anything is exported.

    Raises:
        ModelProtocolError: a call fails or returns tensors of the wrong rank or size.
    """
    frame = (spec["height"], spec["width"], spec["channels"])
    frames = torch.zeros((1, *frame), dtype=torch.uint8)
    call = "encode"
    what = f"uint8 frames {list(frames.shape)}"
    try:
        with torch.no_grad():
            feats = model.encode(frames)
            if not isinstance(feats, torch.Tensor) or feats.ndim != 2 or feats.shape[0] != 1:
                got = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats)
                raise ModelProtocolError(
                    f"{origin}: encode({what}) returned {got}; it must return features [N, D]"
                )
            state = model.init_state(1)
            state = (state,) if isinstance(state, torch.Tensor) else tuple(state)
            shapes = [tuple(s.shape) for s in state]
            for i in range(_PROBE_STEPS):
                call = "step"
                what = f"features {list(feats.shape)} and the state after {i} step(s)"
                logits, nxt = model.step(feats, state)
                state = (nxt,) if isinstance(nxt, torch.Tensor) else tuple(nxt)
                if tuple(logits.shape) != (1, n_labels):
                    raise ModelProtocolError(
                        f"{origin}: step returned logits {tuple(logits.shape)} for one face; "
                        f"expected (1, {n_labels}), one per label"
                    )
                if [tuple(s.shape) for s in state] != shapes:
                    raise ModelProtocolError(
                        f"{origin}: step {i + 1} returned state shapes "
                        f"{[tuple(s.shape) for s in state]}, init_state(1) gives {shapes}: the "
                        "state must keep its shape from step to step (a fixed-size ring, "
                        "not a growing list)"
                    )
            clip = torch.zeros((1, spec["window"], *frame), dtype=torch.uint8)
            call, what = "forward", f"uint8 clip {list(clip.shape)}"
            out = model(clip)
            if tuple(out.shape) != (1, n_labels):
                raise ModelProtocolError(
                    f"{origin}: forward returned {tuple(out.shape)} for one clip; "
                    f"expected (1, {n_labels})"
                )
    except ModelProtocolError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelProtocolError(
            f"{origin}: {call}() fails on {what} as input_spec "
            f"(height {frame[0]}, width {frame[1]}, channels {frame[2]}) declares: "
            f"{type(exc).__name__}: {first}; make input_spec match the model"
        ) from None
