"""The systemd unit and the example daemon config, shipped as package data.

``importlib.resources.files("edge_mer.systemd")`` finds ``edge-mer.service`` and
``edge-mer.toml`` in an installed wheel as well as in a source tree.
"""
