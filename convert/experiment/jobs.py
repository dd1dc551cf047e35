"""Jobs: one (model, seed, fold) each, idempotent, with a completion marker written last.

A job's folder is ``DIR/<model>/seed=<s>/fold=<id>/``. A job works in a scratch folder beside
it and moves it into place only when everything is written; the marker ``DONE.json`` is the
last file, holding the job's hash (:func:`job_hash`: the study digest, the model, the seed
and the fold's sample ids). So a study killed at any moment (SIGKILL included) leaves
finished jobs whose marker matches, and nothing else that looks finished: ``--resume``
skips the former and redoes the rest. A job that failed (a model that fails convert's
checks in this fold, say) leaves ``FAILED.json`` with the reason instead; it is redone on
``--resume``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DONE = "DONE.json"
FAILED = "FAILED.json"
STUDY_FILE = "study.json"


@dataclass(frozen=True)
class FoldSpec:
    """One fold of a protocol: who trains, who selects, who is tested (sample ids)."""

    id: str
    train_subjects: tuple[str, ...]
    validation_subjects: tuple[str, ...]
    test_subjects: tuple[str, ...]
    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FoldSpec:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class Job:
    """What one worker computes. ``hash`` names it; equal hashes compute equal results."""

    model: str
    seed: int
    fold: FoldSpec
    study_digest: str
    hash: str = field(default="")

    def __post_init__(self) -> None:
        if not self.hash:
            object.__setattr__(self, "hash", job_hash(self))

    @property
    def key(self) -> str:
        return f"{self.model}/seed={self.seed}/fold={self.fold.id}"

    def folder(self, out: Path) -> Path:
        return out / self.model / f"seed={self.seed}" / f"fold={self.fold.id}"


def job_hash(job: Job) -> str:
    body = {
        "study": job.study_digest,
        "model": job.model,
        "seed": job.seed,
        "fold": job.fold.to_json(),
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def expand(
    models: Sequence[str], seeds: Sequence[int], folds: Sequence[FoldSpec], digest: str
) -> list[Job]:
    """Every (model, seed, fold), in the order they are dispatched (fold-major, so a
    partial run already covers every model on the first folds)."""
    return [Job(m, s, f, digest) for f in folds for s in seeds for m in models]


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None if it is missing or not (yet) a whole object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: Any) -> None:
    """Atomically (temp file + fsync + rename): a reader sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def status(job: Job, out: Path) -> str:
    """``done`` (marker matches this job's hash), ``failed``, ``stale`` (a marker of another
    hash: the study changed) or ``todo``."""
    folder = job.folder(out)
    done = read_json(folder / DONE)
    if done is not None:
        return "done" if done.get("job_hash") == job.hash else "stale"
    failed = read_json(folder / FAILED)
    if failed is not None and failed.get("job_hash") == job.hash:
        return "failed"
    return "todo"


@contextlib.contextmanager
def scratch(job: Job, out: Path) -> Iterator[Path]:
    """A fresh scratch folder for ``job``; on success it replaces the job's folder.

    Write the marker (:func:`finish`) inside the scratch folder as the last step of the
    block. An exception leaves the job's folder as it was and removes the scratch.
    """
    final = job.folder(out)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = final.with_name(f".{final.name}.work-{uuid.uuid4().hex[:8]}")
    work.mkdir()
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if final.exists():
        # A stale or failed earlier attempt; its replacement is complete.
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(work, final)


def finish(job: Job, folder: Path, summary: dict[str, Any]) -> None:
    """The completion marker: written last, atomically, naming the job's hash."""
    write_json(folder / DONE, {"job_hash": job.hash, "key": job.key, **summary})


def fail(job: Job, out: Path, reason: str, seconds: float) -> None:
    """Record a failed job (keeps no partial outputs)."""
    folder = job.folder(out)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    write_json(
        folder / FAILED,
        {"job_hash": job.hash, "key": job.key, "reason": reason, "seconds": round(seconds, 2)},
    )


def sweep_scratch(out: Path) -> int:
    """Remove scratch folders left by killed runs; returns how many."""
    n = 0
    for p in out.glob("*/seed=*/.fold=*.work-*"):
        shutil.rmtree(p, ignore_errors=True)
        n += 1
    for p in out.glob("*/seed=*/.fold=*.old-*"):
        shutil.rmtree(p, ignore_errors=True)
    return n
