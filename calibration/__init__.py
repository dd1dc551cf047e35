"""Clips and datasets: synthetic micro-expression clips, dataset layouts, calibration readers."""
