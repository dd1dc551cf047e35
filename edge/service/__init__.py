"""The daemon under systemd and what surrounds it on a device.

``daemon`` runs the pipeline with ``notify`` (sd_notify, progress-gated watchdog);
``install`` renders the unit and installs it; ``doctor`` and ``machine`` say what this
board offers.
"""
