"""Dump the Python API of one TensorRT bindings wheel as signature text, without libnvinfer.

usage: python scripts/trt_dump.py PACKAGE_ROOT STUB_DIR   (prints the text on stdout)

PACKAGE_ROOT holds the unpacked ``tensorrt_bindings`` package of one wheel (pip's
``tensorrt-bindings`` / ``tensorrt-cu12-bindings``: the compiled pybind11 module without
NVIDIA's native libraries). The module links against libnvinfer, libnvonnxparser and
libnvinfer_plugin but only needs a handful of C entry points from them
(``createInferBuilder_INTERNAL``, ``getPluginRegistry``, ...), which it calls when a
``Builder``/``Runtime``/``OnnxParser`` is created, never at import. So this script compiles
stub libraries that define those symbols (they return NULL), loads them under the sonames
the module asks for, and imports it: pybind11 then registers every class, method, property
and enum, and their real signatures can be read from the docstrings pybind11 writes.

Run it in a fresh interpreter per wheel (two TensorRT versions cannot share a process);
:mod:`trt_signatures` does. Needs ``gcc``, ``readelf`` and ``nm`` (binutils).

Output lines (see ``trt_api.parse_dump``)::

    version 10.13.0.35
    class IExecutionContext
    method IExecutionContext.set_input_shape(self, name: str, shape: tuple) -> bool
    property IExecutionContext.num_io_tensors ro
    enum BuilderFlag.INT8 = 1
    buffer IHostMemory
    function nptype(trt_type)
    probe Dims<-tuple
"""

from __future__ import annotations

import ctypes
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = "tensorrt_bindings"
# Special methods edge-mer relies on: construction, str() of a ParserError, iterating a Dims.
DUNDERS = {"__init__", "__str__", "__len__", "__getitem__"}


def _lines(cmd: list[str]) -> list[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()


def load_stubs(so: Path, stub_dir: Path) -> list[str]:
    """Compile and load (RTLD_GLOBAL) a stub for every ``libnv*`` the module needs."""
    needed = [
        m.group(1)
        for line in _lines(["readelf", "-d", str(so)])
        if (m := re.search(r"\(NEEDED\).*\[(libnv[^\]]+)\]", line))
    ]
    process = ctypes.CDLL(None)
    symbols = []
    for line in _lines(["nm", "-D", "--undefined-only", str(so)]):
        parts = line.split()
        if len(parts) != 2 or parts[0] != "U" or "@" in parts[1]:
            continue  # versioned symbols come from libc/libstdc++
        name = parts[1]
        if name.startswith(("Py", "_Py")):
            continue
        try:
            process[name]  # already provided by this process (libc, libdl, libpthread)
        except AttributeError:
            symbols.append(name)
    stub_dir.mkdir(parents=True, exist_ok=True)
    src = stub_dir / "stub.c"
    src.write_text("".join(f"void *{s}(void) {{ return 0; }}\n" for s in symbols))
    for soname in needed:
        lib = stub_dir / soname
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-o", str(lib), str(src), f"-Wl,-soname,{soname}"],
            check=True,
        )
        ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    return symbols


def _norm(text: str) -> str:
    return re.sub(r"\btensorrt_bindings\.(tensorrt\.)?|\btensorrt\.tensorrt\.", "tensorrt.", text)


def _signatures(name: str, doc: str | None) -> list[str]:
    """pybind11's signature lines (one per overload) from a method's docstring."""
    lines = (doc or "").splitlines()
    if not lines:
        return []
    if len(lines) > 1 and lines[1].strip() == "Overloaded function.":
        pat = re.compile(rf"^\d+\. ({re.escape(name)}\(.*)$")
        return [m.group(1) for line in lines if (m := pat.match(line.strip()))]
    return [lines[0]] if lines[0].startswith(f"{name}(") else []


def _has_buffer(cls: type) -> bool:
    """Whether the type implements the buffer protocol (``tp_as_buffer`` is set)."""
    offset = 20 * ctypes.sizeof(ctypes.c_void_p)  # tp_as_buffer in PyTypeObject (3.x)
    return bool(ctypes.c_void_p.from_address(id(cls) + offset).value)


def dump_class(path: str, cls: type, out: list[str], depth: int = 0) -> None:
    members = getattr(cls, "__members__", None)
    if isinstance(members, dict) and all(isinstance(v, cls) for v in members.values()):
        out.append(f"class {path} enum")
        out.extend(f"enum {path}.{k} = {int(v)}" for k, v in members.items())
        if isinstance(inspect.getattr_static(cls, "name", None), property):
            out.append(f"property {path}.name ro")
        return
    out.append(f"class {path}")
    if _has_buffer(cls):
        out.append(f"buffer {path}")
    for name in sorted(dir(cls)):
        if (name.startswith("__") and name not in DUNDERS) or name.startswith("_pybind11"):
            continue
        raw = inspect.getattr_static(cls, name)
        if isinstance(raw, property):
            out.append(f"property {path}.{name} {'rw' if raw.fset else 'ro'}")
        elif isinstance(raw, type):
            if depth < 1 and raw.__module__.startswith(PACKAGE):
                dump_class(f"{path}.{name}", raw, out, depth + 1)
        elif callable(raw) or isinstance(raw, (staticmethod, classmethod)):
            obj = getattr(cls, name)
            sigs = _signatures(name, getattr(obj, "__doc__", None))
            if not sigs and inspect.isfunction(inspect.unwrap(obj)):
                sigs = [f"{name}{inspect.signature(obj)}"]
            out.extend(f"method {path}.{_norm(s)}" for s in sigs)


def dump(root: Path, stub_dir: Path) -> str:
    so = next((root / PACKAGE).glob("tensorrt*.so"))
    load_stubs(so, stub_dir)
    sys.path.insert(0, str(root))
    mod = importlib.import_module(PACKAGE)
    out = [f"version {mod.__version__}"]
    for name in sorted(dir(mod)):
        if name.startswith("_"):
            continue
        obj = getattr(mod, name)
        if isinstance(obj, type) and obj.__module__.startswith(PACKAGE):
            dump_class(name, obj, out)
        elif inspect.isfunction(obj):
            out.append(f"function {name}{inspect.signature(obj)}")
        elif callable(obj) and not isinstance(obj, type):
            out.extend(f"function {_norm(s)}" for s in _signatures(name, obj.__doc__))
    out.extend(probes(mod))
    return "\n".join(out) + "\n"


def probes(trt: object) -> list[str]:
    """Behaviour a signature does not show, tried on plain structs (no libnvinfer call)."""
    out = []
    for kind, value in (("tuple", (2, 3)), ("list", [2, 3])):
        try:  # Dims.__len__(self: Dims) converts its argument like any Dims parameter
            ok = trt.Dims.__len__(value) == 2  # type: ignore[attr-defined]
        except TypeError:
            ok = False
        if ok:
            out.append(f"probe Dims<-{kind}")
    return out


if __name__ == "__main__":
    sys.stdout.write(dump(Path(sys.argv[1]), Path(sys.argv[2])))
