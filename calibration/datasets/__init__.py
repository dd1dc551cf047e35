"""Micro-expression datasets as distributed, the field's label maps and protocols.

The pieces, in the order an experiment uses them::

    from edge_mer.calibration.datasets import (
        read_dataset, apply_map, build_megc2019, make_folds,
    )

    copy = read_dataset("casme2", "/data/CASME2")      # DatasetCopy: samples, problems, errata
    labelled, dropped = apply_map(copy.samples, "megc3")
    folds = make_folds("loso", labelled, dataset="casme2", val_fraction=0.2, seed=0)
    for fold in folds:                                 # Fold: train / validation / test ids
        ...
    # scoring: edge_mer.metrics.pooled_scores([(s.id, s.label) ...], [(id, predicted) ...], classes)

    comp = build_megc2019(casme2_root, samm_root, smic_root)   # official list, counts asserted
    folds = make_folds("megc2019", comp.samples)               # 68 LOSO folds

Modules: :mod:`.schema` (Sample, DatasetCopy, Problem), :mod:`.sheets` (header-name
parsing, ids as text), :mod:`.errata` (known defects, with sources), one reader per dataset
(:mod:`.casme2`, :mod:`.samm`, :mod:`.smic`, :mod:`.casme3`), :mod:`.registry` (names,
documented facts, ``read_dataset``), :mod:`.labels` (normalisation, named maps),
:mod:`.megc2019` (the composite), :mod:`.protocols` (folds), :mod:`.summary` (what
``edge-mer datasets`` prints). Nothing here imports torch or OpenCV; .xlsx sheets need
openpyxl (``pip install 'edge-mer[datasets]'``).
"""

from edge_mer.calibration.datasets.labels import (
    LABEL_MAPS,
    Labelled,
    LabelMap,
    apply_map,
    get_map,
    normalise_emotion,
)
from edge_mer.calibration.datasets.megc2019 import Composite, build_megc2019, official_list
from edge_mer.calibration.datasets.protocols import PROTOCOLS, Fold, ProtocolError, make_folds
from edge_mer.calibration.datasets.registry import DATASETS, detect_dataset, read_dataset
from edge_mer.calibration.datasets.schema import DatasetCopy, Problem, Sample

__all__ = [
    "DATASETS",
    "LABEL_MAPS",
    "PROTOCOLS",
    "Composite",
    "DatasetCopy",
    "Fold",
    "LabelMap",
    "Labelled",
    "Problem",
    "ProtocolError",
    "Sample",
    "apply_map",
    "build_megc2019",
    "detect_dataset",
    "get_map",
    "make_folds",
    "normalise_emotion",
    "official_list",
    "read_dataset",
]
