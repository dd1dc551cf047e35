"""The on-device data path, one module a stage.

``sources`` / ``camera`` -> ``ring`` (capture thread) -> ``resample`` (to the model's fps)
-> ``face`` (detect, track, lock the crop) -> ``preprocess`` (crop into the runner's input)
-> :mod:`edge_mer.runners` (encoder, step) -> ``state_cache`` (per-track recurrent state)
-> ``spotter`` (causal events) -> ``sinks`` (JSONL, stdout, MQTT); ``telemetry`` times every
stage. ``live`` assembles them from a :class:`~edge_mer.config.Config`. Nothing here imports
the service, the bench or the CLI.
"""
