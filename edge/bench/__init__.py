"""``edge-mer bench``: the pipeline per runner x precision (``run``), what is measured per
stage and per run (``measure``), tables and JSON (``report``) and plots (``plots``)."""
