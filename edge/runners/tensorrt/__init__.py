"""TensorRT engines, built on the device that runs them.

``engine`` (versions, device facts, names, build plans), ``check`` (sidecars: may this
engine be loaded here?), ``build`` (the TensorRT builder calls). ``tensorrt`` itself is
imported lazily.
"""
