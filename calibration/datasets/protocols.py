"""The field's evaluation protocols as split generators: folds of sample ids by subject.

Every generator takes samples (anything with ``id``, ``dataset`` and ``subject_key``:
:class:`~edge_mer.calibration.datasets.schema.Sample` or
:class:`~edge_mer.calibration.datasets.labels.Labelled`) and yields :class:`Fold` objects:

- :func:`loso` (``"loso"``): one fold per subject of one dataset (or of all given);
- :func:`megc2019` (``"megc2019"``): LOSO over the composite, 68 folds on a full copy;
- :func:`cross` (``"cross"``): train on all of one dataset, test on all of another (one fold
  per test dataset: CASME II -> SMIC-HS / VIS / NIR and the reverse, CDMER's tasks);
- :func:`leave_one_dataset_out` (``"leave-one-dataset-out"``): each dataset in turn is the
  test set, the others train.

Each fold names its test subjects, its training subjects and its inner-validation subjects
(for model selection): the validation subjects are drawn from the training subjects only,
per dataset, deterministically from ``seed`` and the fold id, and taken out of training.
No subject is ever in two of the three sets; :func:`make_folds` checks it for every fold it
returns. A protocol whose test (or training) set would be empty is refused
(:class:`ProtocolError`, exit 2).

The experiment runner calls ``make_folds(kind, samples, dataset=..., train=..., test=...,
val_fraction=..., seed=...)``. Subjects are ``dataset/subject`` keys (``casme2/01``), so two
datasets' subjects never collide; sample ids are ``dataset/subject/clip``.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from edge_mer.errors import EdgeMerError, InputError

__all__ = [
    "PROTOCOLS",
    "Fold",
    "ProtocolError",
    "cross",
    "leave_one_dataset_out",
    "loso",
    "make_folds",
    "megc2019",
]

PROTOCOLS = ("loso", "megc2019", "cross", "leave-one-dataset-out")
MEGC2019_DATASETS = ("casme2", "samm", "smic-hs")


class ProtocolError(InputError):
    """A protocol that cannot be built from these samples (an empty test or training set)."""


class _Keyed(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def dataset(self) -> str: ...
    @property
    def subject_key(self) -> str: ...


@dataclass(frozen=True)
class Fold:
    """One split. Subjects are ``dataset/subject`` keys; sample ids ``dataset/subject/clip``.
    The three subject sets are disjoint, and so are the three sample sets."""

    protocol: str
    id: str
    train_subjects: tuple[str, ...]
    validation_subjects: tuple[str, ...]
    test_subjects: tuple[str, ...]
    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]

    @property
    def slug(self) -> str:
        """The id as a folder name: ``casme2/01`` -> ``casme2_01``, ``casme2->smic-hs`` ->
        ``casme2_to_smic-hs``."""
        return re.sub(r"[^A-Za-z0-9.-]+", "_", self.id.replace("->", "_to_"))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, tuples as lists, and ``slug``."""
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}
        return {**out, "slug": self.slug}


def _subjects(samples: Sequence[_Keyed]) -> dict[str, list[str]]:
    """subject key -> its sample ids, sorted (folds do not depend on the input order)."""
    out: dict[str, list[str]] = {}
    for s in samples:
        out.setdefault(s.subject_key, []).append(s.id)
    return {k: sorted(v) for k, v in out.items()}


def _draw_validation(
    train_subjects: Sequence[str], fraction: float, seed: int, fold_id: str
) -> list[str]:
    """``round(fraction * n)`` subjects per dataset (at least 1 when the dataset has two or
    more training subjects and fraction > 0), by a generator seeded from (seed, fold id)."""
    if fraction <= 0:
        return []
    digest = hashlib.sha256(f"{seed}\x00{fold_id}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    chosen = []
    by_dataset: dict[str, list[str]] = {}
    for s in sorted(train_subjects):
        by_dataset.setdefault(s.split("/", 1)[0], []).append(s)
    for _dataset, subjects in sorted(by_dataset.items()):
        if len(subjects) < 2:
            continue
        k = min(max(1, round(fraction * len(subjects))), len(subjects) - 1)
        chosen += rng.sample(subjects, k)
    return sorted(chosen)


def _fold(
    protocol: str,
    fold_id: str,
    by_subject: dict[str, list[str]],
    train_subjects: Iterable[str],
    test_subjects: Iterable[str],
    fraction: float,
    seed: int,
) -> Fold:
    test_s = sorted(set(test_subjects))
    pool = sorted(set(train_subjects) - set(test_s))
    val_s = _draw_validation(pool, fraction, seed, fold_id)
    train_s = sorted(set(pool) - set(val_s))
    if not test_s or not any(by_subject[s] for s in test_s):
        raise ProtocolError(f"{protocol} fold {fold_id!r}: the test set would be empty")
    if not train_s:
        raise ProtocolError(
            f"{protocol} fold {fold_id!r}: no training subjects left (the samples hold "
            f"{len(by_subject)} subject(s)); give more subjects or lower val_fraction"
        )

    def ids(subjects: list[str]) -> tuple[str, ...]:
        return tuple(i for s in subjects for i in by_subject[s])

    fold = Fold(
        protocol,
        fold_id,
        tuple(train_s),
        tuple(val_s),
        tuple(test_s),
        ids(train_s),
        ids(val_s),
        ids(test_s),
    )
    _assert_disjoint(fold)
    return fold


def _assert_disjoint(fold: Fold) -> None:
    sets = (fold.train_subjects, fold.validation_subjects, fold.test_subjects)
    samples = (fold.train, fold.validation, fold.test)
    for group in (sets, samples):
        a, b, c = (set(x) for x in group)
        if a & b or a & c or b & c:
            raise EdgeMerError(f"fold {fold.id!r} shares subjects or samples between its sets")


def _datasets(samples: Sequence[_Keyed]) -> list[str]:
    return list(dict.fromkeys(s.dataset for s in samples))


def _only(samples: Sequence[_Keyed], datasets: Iterable[str]) -> list[_Keyed]:
    keep = set(datasets)
    return [s for s in samples if s.dataset in keep]


def loso(
    samples: Sequence[_Keyed],
    *,
    dataset: str | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    protocol: str = "loso",
) -> Iterator[Fold]:
    """One fold per subject of ``dataset`` (of every dataset given when None), in sorted
    subject order; fold id = the test subject's key (``casme2/01``)."""
    chosen = samples if dataset is None else _only(samples, [dataset])
    if not chosen:
        raise ProtocolError(
            f"{protocol}: no samples of dataset {dataset!r} among the {len(samples)} given "
            f"(datasets: {', '.join(_datasets(samples)) or 'none'}): the test set would be empty"
        )
    by_subject = _subjects(chosen)
    for subject in sorted(by_subject):
        yield _fold(protocol, subject, by_subject, by_subject, [subject], val_fraction, seed)


def megc2019(
    samples: Sequence[_Keyed], *, val_fraction: float = 0.2, seed: int = 0
) -> Iterator[Fold]:
    """LOSO over the composite's samples (68 folds on a complete copy). Samples of other
    datasets than casme2, samm and smic-hs are refused."""
    other = sorted(set(_datasets(samples)) - set(MEGC2019_DATASETS))
    if other:
        raise ProtocolError(
            f"megc2019: samples of {other} are not part of the composite; build the samples "
            "with edge_mer.calibration.datasets.megc2019.build_megc2019"
        )
    yield from loso(samples, val_fraction=val_fraction, seed=seed, protocol="megc2019")


def cross(
    samples: Sequence[_Keyed],
    *,
    train: str,
    test: str | Sequence[str],
    val_fraction: float = 0.2,
    seed: int = 0,
) -> Iterator[Fold]:
    """Train on every subject of ``train``, test on every subject of each ``test`` dataset:
    one fold per test dataset, id ``<train>-><test>``."""
    tests = [test] if isinstance(test, str) else list(test)
    if not tests:
        raise ProtocolError("cross: no test dataset given; name one, e.g. test = ['smic-hs']")
    train_samples = _only(samples, [train])
    if not train_samples:
        raise ProtocolError(
            f"cross: no samples of the training dataset {train!r} (datasets given: "
            f"{', '.join(_datasets(samples)) or 'none'})"
        )
    for name in tests:
        if name == train:
            raise ProtocolError(f"cross: test dataset {name!r} is the training dataset")
        test_samples = _only(samples, [name])
        if not test_samples:
            raise ProtocolError(
                f"cross {train}->{name}: no samples of {name!r} among the given datasets "
                f"({', '.join(_datasets(samples))}): the test set would be empty"
            )
        by_subject = _subjects([*train_samples, *test_samples])
        yield _fold(
            "cross",
            f"{train}->{name}",
            by_subject,
            _subjects(train_samples),
            _subjects(test_samples),
            val_fraction,
            seed,
        )


def leave_one_dataset_out(
    samples: Sequence[_Keyed], *, val_fraction: float = 0.2, seed: int = 0
) -> Iterator[Fold]:
    """One fold per dataset: test on all of it, train on all the others; id = its name."""
    names = _datasets(samples)
    if len(names) < 2:
        raise ProtocolError(
            f"leave-one-dataset-out needs samples of at least two datasets, got {names}: "
            "the training set of the only fold would be empty"
        )
    by_subject = _subjects(samples)
    for name in names:
        test_s = [k for k in by_subject if k.split("/", 1)[0] == name]
        train_s = [k for k in by_subject if k.split("/", 1)[0] != name]
        yield _fold("leave-one-dataset-out", name, by_subject, train_s, test_s, val_fraction, seed)


def make_folds(
    kind: str,
    samples: Sequence[_Keyed],
    *,
    dataset: str | None = None,
    train: str | None = None,
    test: str | Sequence[str] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> list[Fold]:
    """All folds of protocol ``kind`` (one of :data:`PROTOCOLS`) over ``samples``.

    ``dataset``: loso's dataset (None: all given). ``train``/``test``: cross's datasets.
    ``val_fraction`` in [0, 1): the share of each fold's training subjects (per dataset)
    held out for inner validation; 0 for none. Raises :class:`ProtocolError` for an unknown
    kind, missing arguments, duplicate sample ids, or an empty test or training set.
    """
    if not 0 <= val_fraction < 1:
        raise ProtocolError(f"val_fraction {val_fraction!r} must be in [0, 1)")
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ProtocolError(f"sample id {dup!r} appears more than once in the samples")
    if kind == "loso":
        folds = list(loso(samples, dataset=dataset, val_fraction=val_fraction, seed=seed))
    elif kind == "megc2019":
        folds = list(megc2019(samples, val_fraction=val_fraction, seed=seed))
    elif kind == "cross":
        if train is None or test is None:
            raise ProtocolError("cross needs train= and test= datasets, e.g. casme2 -> smic-hs")
        folds = list(cross(samples, train=train, test=test, val_fraction=val_fraction, seed=seed))
    elif kind == "leave-one-dataset-out":
        folds = list(leave_one_dataset_out(samples, val_fraction=val_fraction, seed=seed))
    else:
        raise ProtocolError(f"no protocol {kind!r}: choose one of {', '.join(PROTOCOLS)}")
    for fold in folds:
        _assert_disjoint(fold)
    return folds
