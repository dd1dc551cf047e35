"""``edge-mer experiment``: LOSO, composite and cross-dataset studies of many architectures.

A study is one TOML file (:mod:`~edge_mer.convert.experiment.study`). It expands into jobs,
one per (model, seed, fold) (:mod:`~edge_mer.convert.experiment.jobs`); each job trains on
the fold's training subjects, selects on its validation subjects, converts the model as
``edge-mer convert --int8`` does with calibration clips from its training subjects, and
scores the test subjects with PyTorch, ONNX Runtime FP32 and ONNX Runtime INT8
(:mod:`~edge_mer.convert.experiment.fold`). Jobs run in a local process pool or on Ray
(:mod:`~edge_mer.convert.experiment.backends`); each leaves a completion marker last, so a
killed study resumes. Results are computed from the files alone
(:mod:`~edge_mer.convert.experiment.results`, :mod:`~edge_mer.convert.experiment.report`).
"""
