"""One training stage's epochs: shuffled mini-batches, class-balanced cross-entropy, Adam,
per-epoch validation figures, and the choice of the epoch whose weights are kept.

Selection rules (``selection``):
- ``"fixed"``: train every epoch and keep the last; validation figures, when a validation
  set is given, are only recorded;
- ``"inner-val"``: after each epoch, score the validation windows (UF1, then the lower
  loss on ties); keep the best epoch's weights and stop after ``patience`` epochs without
  a better one. The validation set must come from training subjects only (the experiment
  runner passes a fold's validation subjects), never from the test subjects.

Determinism: shuffling uses a ``torch.Generator`` seeded from ``seed``; nothing here reads
the clock or the global numpy state; :func:`reproducible` seeds torch, asks for
deterministic kernels and fixes the thread count for a whole run, and restores all three.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_mer.metrics import scores

__all__ = ["SELECTIONS", "StageResult", "reproducible", "run_stage", "validation_figures"]

SELECTIONS = ("fixed", "inner-val")


@dataclass
class StageResult:
    """What one stage did: per-epoch figures, the epoch kept, the last training accuracy,
    and its wall seconds (benchmarks read them from experiment jobs' metrics.json)."""

    stage: str
    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    train_accuracy: float = 0.0
    stopped_early: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "train_accuracy": self.train_accuracy,
            "stopped_early": self.stopped_early,
            "seconds": round(self.seconds, 3),
        }


def validation_figures(logits: torch.Tensor, truth: torch.Tensor, n_classes: int) -> dict:
    """Loss (unweighted cross-entropy), UF1, UAR and accuracy of validation logits."""
    loss = float(nn.functional.cross_entropy(logits, truth))
    pred = logits.argmax(1).numpy()
    figures = scores(truth.numpy(), pred, n_classes)
    return {"loss": round(loss, 6), **{k: round(v, 6) for k, v in figures.items()}}


def _better(new: dict, best: dict | None) -> bool:
    if best is None:
        return True
    if new["uf1"] != best["uf1"]:
        return new["uf1"] > best["uf1"]
    return new["loss"] < best["loss"]


def run_stage(
    stage: str,
    *,
    params: Iterable[nn.Parameter],
    labels: torch.Tensor,
    forward: Callable[[torch.Tensor], torch.Tensor],
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    train_mode: Callable[[bool], None],
    snapshot_of: nn.Module,
    n_classes: int,
    validate: Callable[[], dict] | None = None,
    selection: str = "fixed",
    patience: int = 10,
    say: Callable[[str], None] = lambda _m: None,
) -> StageResult:
    """Train ``params`` for up to ``epochs`` epochs on ``len(labels)`` samples.

    Args:
        forward: sample indices ``[B]`` -> logits ``[B, K]`` (it gathers its own inputs).
        train_mode: ``train_mode(True)`` before an epoch, ``train_mode(False)`` before
            validating (the caller decides which modules change mode).
        snapshot_of: the module whose ``state_dict`` is kept for the best epoch.
        validate: () -> :func:`validation_figures` of the validation windows, or None.
    """
    optim = torch.optim.Adam(params, lr=lr)
    counts = torch.bincount(labels, minlength=n_classes).float().clamp(min=1)
    loss_fn = nn.CrossEntropyLoss(weight=(counts.sum() / counts) / len(counts))
    gen = torch.Generator().manual_seed(seed)
    result = StageResult(stage)
    started = time.perf_counter()
    best: dict | None = None
    best_state: dict[str, torch.Tensor] | None = None
    n = len(labels)
    for epoch in range(1, epochs + 1):
        train_mode(True)
        order = torch.randperm(n, generator=gen)
        correct, total_loss = 0, 0.0
        for s in range(0, n, batch_size):
            idx = order[s : s + batch_size]
            logits = forward(idx)
            loss = loss_fn(logits, labels[idx])
            optim.zero_grad()
            loss.backward()
            optim.step()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.detach().argmax(1) == labels[idx]).sum())
        figures: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": round(total_loss / n, 6),
            "train_accuracy": round(correct / n, 6),
        }
        result.train_accuracy = correct / n
        if validate is not None:
            train_mode(False)
            with torch.no_grad():
                val = validate()
            figures["validation"] = val
            if selection == "inner-val" and _better(val, best):
                best, result.best_epoch = val, epoch
                best_state = copy.deepcopy(snapshot_of.state_dict())
        result.epochs.append(figures)
        if epoch % max(1, epochs // 5) == 0 or epoch == epochs:
            val_text = ""
            if "validation" in figures:
                v = figures["validation"]
                val_text = f", validation UF1 {v['uf1']:.3f} loss {v['loss']:.3f}"
            say(
                f"{stage} epoch {epoch}/{epochs}: loss {figures['train_loss']:.3f}, "
                f"train accuracy {figures['train_accuracy']:.3f}{val_text}"
            )
        if selection == "inner-val" and epoch - result.best_epoch >= patience:
            result.stopped_early = epoch < epochs
            say(f"{stage}: no better validation UF1 for {patience} epochs; stopping")
            break
    if selection == "inner-val" and best_state is not None:
        snapshot_of.load_state_dict(best_state)
        say(f"{stage}: keeping epoch {result.best_epoch} (validation UF1 {best['uf1']:.3f})")
    else:
        result.best_epoch = len(result.epochs)
    train_mode(False)
    result.seconds = time.perf_counter() - started
    return result


def batches(n: int, size: int) -> Iterable[np.ndarray]:
    """``range(n)`` in consecutive index arrays of at most ``size``."""
    for s in range(0, n, size):
        yield np.arange(s, min(n, s + size))


@contextlib.contextmanager
def reproducible(seed: int, threads: int | None) -> Iterator[None]:
    """Seeded, deterministic kernels, ``threads`` torch threads; global state restored."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(old_threads)
            torch.use_deterministic_algorithms(old_det)
