"""The MEGC 2019 composite list, ``combined_3class_gt.csv``, and its ``PROVENANCE.md``.

Data only: :mod:`edge_mer.calibration.datasets.megc2019` reads it.
"""
