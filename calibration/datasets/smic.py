"""SMIC: HS (100 fps), VIS and NIR (25 fps); the micro-expression set, labelled by folder.

::

    ROOT/HS/s1/micro/negative/s1_ne_01/image000123.jpg     (also .bmp / .png)
    ROOT/VIS/s1/micro/positive/s1_po_01/...
    ROOT/NIR/s1/micro/surprise/s1_sur_01/...

ROOT may also be the ``HS`` (``VIS``, ``NIR``) folder itself, or hold it one level down
(``ROOT/SMIC_all_cropped/HS/``). No public sheet lists the standard SMIC micro set, so the
label is the folder (negative, positive, surprise) and the onset and offset are the clip's
first and last frames. **SMIC has no apex annotation: every sample's apex is None**; a
consumer that needs one uses the onset-offset midpoint and says so. NIR frames are
effectively gray. Subjects are ``s1`` on disk (``s01`` in the MEGC lists).

For HS the official MEGC 2019 list names all 164 clips of the micro set, so a missing clip
folder is reported by id (``missing``); VIS and NIR have no such list, and their counts are
compared with the documented 71 clips only by ``edge-mer datasets check``.
"""

from __future__ import annotations

import re
from pathlib import Path

from edge_mer.calibration.datasets.schema import (
    DatasetCopy,
    Problem,
    Sample,
    declared_fps,
    frame_problems,
    list_frames,
    require_usable,
    sample_id,
)
from edge_mer.errors import DataError

__all__ = ["NO_APEX_NOTE", "SMIC_FPS", "SMIC_VARIANTS", "read_smic"]

# dataset name -> (folder, fps)
SMIC_VARIANTS = {"smic-hs": ("HS", 100.0), "smic-vis": ("VIS", 25.0), "smic-nir": ("NIR", 25.0)}
SMIC_FPS = {name: fps for name, (_, fps) in SMIC_VARIANTS.items()}
LABELS = ("negative", "positive", "surprise")
_CODES = {"ne": "negative", "po": "positive", "sur": "surprise"}
_SUBJECT_RE = re.compile(r"^s\d+$", re.IGNORECASE)
_FRAME_RE = re.compile(r"(\d+)\.(?:jpe?g|png|bmp|tiff?)$", re.IGNORECASE)
NO_APEX_NOTE = (
    "SMIC has no apex annotation: apex is None for every sample (consumers that need one "
    "use the onset-offset midpoint and say so); onset and offset are the clip's first and "
    "last frames"
)


def _is_variant_dir(d: Path) -> bool:
    return d.is_dir() and any(
        c.is_dir() and _SUBJECT_RE.match(c.name) and (c / "micro").is_dir() for c in d.iterdir()
    )


def variant_root(root: Path, dataset: str) -> Path:
    """The ``HS``/``VIS``/``NIR`` folder of ``dataset`` under ``root`` (see the module doc)."""
    folder = SMIC_VARIANTS[dataset][0]
    candidates = [root / folder]
    if root.name.upper() == folder:
        candidates.insert(0, root)
    candidates += sorted(root.glob(f"*/{folder}"), key=lambda c: "crop" not in str(c).lower())
    for c in candidates:
        if _is_variant_dir(c):
            return c
    if _is_variant_dir(root):
        return root
    raise DataError(
        f"{str(root)!r} is not a SMIC {folder} copy: expected {folder}/s1/micro/negative/"
        f"s1_ne_01/image<N>.jpg under it (or pass the {folder} folder itself)"
    )


def read_smic(
    root: Path,
    dataset: str = "smic-hs",
    *,
    fps: float | None = None,
    expected: list[str] | None = None,
) -> DatasetCopy:
    """The micro-expression clips of one SMIC variant (``smic-hs``, ``smic-vis``,
    ``smic-nir``) under ``root``, in subject / label / clip order.

    ``expected``: sample ids the copy should hold (for HS, the official list's); each one
    without its folder is a ``missing-folder`` problem. Without it, a missing clip folder
    cannot be noticed. ``fps`` defaults to ``root/README.txt``'s declaration, else the
    variant's documented rate.
    """
    if dataset not in SMIC_VARIANTS:
        raise DataError(f"no SMIC variant {dataset!r}: choose one of {', '.join(SMIC_VARIANTS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"SMIC root {str(root)!r} is not a folder")
    base = variant_root(root, dataset)
    if fps is None:
        fps = declared_fps(root) or declared_fps(base) or SMIC_VARIANTS[dataset][1]
    copy = DatasetCopy(dataset, root, float(fps), [], notes=[NO_APEX_NOTE])
    if dataset == "smic-nir":
        copy.notes.append("SMIC NIR frames are near-infrared: effectively gray")
    subjects = sorted(
        (d for d in base.iterdir() if d.is_dir() and _SUBJECT_RE.match(d.name)),
        key=lambda d: int(d.name[1:]),
    )
    for subject_dir in subjects:
        subject = subject_dir.name
        micro = subject_dir / "micro"
        if not micro.is_dir():
            continue
        for label_dir in sorted(p for p in micro.iterdir() if p.is_dir()):
            label = label_dir.name
            if label.lower() not in LABELS:
                copy.problems.append(
                    Problem(
                        sample_id(dataset, subject, label),
                        "unexpected",
                        f"{label_dir}: not a label folder ({', '.join(LABELS)})",
                    )
                )
                continue
            for clip_dir in sorted(p for p in label_dir.iterdir() if p.is_dir()):
                _add_clip(copy, dataset, subject, label, clip_dir, float(fps))
    copy.rows = len(copy.samples) + len(copy.missing)
    if expected is not None:
        have = {s.id for s in copy.samples} | set(copy.missing)
        for sid in expected:
            if sid not in have:
                copy.problems.append(
                    Problem(sid, "missing-folder", f"no clip folder for {sid} under {base}")
                )
        copy.rows = len(set(expected) | have)
    return require_usable(copy, f"{base}/s<N>/micro/<label>/<clip>/image<N>.jpg")


def _add_clip(
    copy: DatasetCopy, dataset: str, subject: str, label: str, clip_dir: Path, fps: float
) -> None:
    clip = clip_dir.name
    sid = sample_id(dataset, subject, clip)
    parts = clip.split("_")
    code = _CODES.get(parts[1].lower()) if len(parts) >= 3 else None
    if parts[0].lower() != subject.lower() or code != label.lower():
        copy.problems.append(
            Problem(
                sid,
                "name",
                f"{clip_dir}: clip name does not read <subject>_<ne|po|sur>_<n> for "
                f"{subject} / {label}; the folder's label is used",
            )
        )
    frames = list_frames(clip_dir, _FRAME_RE)
    if not frames:
        copy.problems.append(Problem(sid, "no-frames", f"no image<N>.jpg in {clip_dir}"))
        return
    numbers = tuple(frames)
    copy.problems.extend(frame_problems(sid, numbers, numbers[0], numbers[-1], clip_dir))
    copy.samples.append(
        Sample(
            dataset=dataset,
            subject=subject,
            clip=clip,
            onset=numbers[0],
            apex=None,
            offset=numbers[-1],
            fps=fps,
            emotion=label,
            frame_paths=tuple(frames.values()),
            frame_numbers=numbers,
        )
    )
