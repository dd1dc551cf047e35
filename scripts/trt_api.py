"""Does edge-mer call TensorRT's Python API as it is, in every version it supports?

Pure logic, no downloads: :mod:`trt_signatures` feeds it the signature text that
:mod:`trt_dump` extracts from each bindings wheel, and the tests feed it small samples.

- :func:`parse_dump` reads that text into an :class:`Api` (methods with their overloads,
  properties, enum values, buffer types, module functions, probes).
- :data:`trt_uses.USES` is the reviewed list of what edge-mer uses: each entry names the API
  item, how it is used, the file, the positional argument count at the call site and the
  :class:`TrtVersion` predicate of the branch that uses it.
- :func:`scan_source` lists the attribute calls, reads, writes, ``getattr`` lookups,
  upper-case string constants and overrides of a source file (AST), and
  :func:`check_coverage` fails every one whose name is a TensorRT name that the reviewed
  list does not cover, so the list cannot silently miss a call. It also fails list entries
  whose call sites pass another number of arguments, or that no longer occur.
- :func:`check_use` decides per version: used and present with that arity, present but not
  used (another branch serves this version), absent and not used, or a mismatch.

:mod:`trt_fakes` compares the tests' fake TensorRT classes with the real ones.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

# --------------------------------------------------------------------------- signatures


@dataclass(frozen=True)
class Sig:
    """One overload: positional parameters after ``self`` (``maximum`` inf with ``*args``)."""

    text: str
    required: int
    maximum: float

    def accepts(self, n: int) -> bool:
        return self.required <= n <= self.maximum

    def arity(self) -> str:
        if self.maximum == self.required:
            return str(self.required)
        top = "*" if math.isinf(self.maximum) else str(int(self.maximum))
        return f"{self.required}-{top}"


def split_top(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets (``List[int]``, ``<Severity.WARNING: 2>``)."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        if ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [p.strip() for p in out if p.strip()]


_SIG = re.compile(r"^([\w.]+)\((.*)\)(?:\s*->\s*.*)?$")


def parse_sig(text: str) -> tuple[str, Sig]:
    """``set_input_shape(self: X, name: str, shape: tuple) -> bool`` -> (name, Sig(2, 2))."""
    m = _SIG.match(text.strip())
    if not m:
        raise ValueError(f"not a signature: {text!r}")
    required, maximum = 0, 0.0
    for i, param in enumerate(split_top(m.group(2))):
        pname = re.split(r"[:=\s]", param, maxsplit=1)[0]
        if (i == 0 and pname in ("self", "this")) or pname in ("/", "*"):
            continue
        if pname.startswith("**"):
            continue
        if pname.startswith("*"):
            maximum = math.inf
            continue
        maximum += 1
        if "=" not in param:
            required += 1
    return m.group(1), Sig(text.strip(), required, maximum)


@dataclass
class Api:
    """One TensorRT version's Python API, as :mod:`trt_dump` wrote it."""

    version: str
    classes: dict[str, str] = field(default_factory=dict)  # path -> "class" | "enum"
    methods: dict[str, list[Sig]] = field(default_factory=dict)  # "Class.name"
    properties: dict[str, bool] = field(default_factory=dict)  # path -> writable
    enums: dict[str, int] = field(default_factory=dict)  # "Enum.MEMBER" -> value
    buffers: set[str] = field(default_factory=set)
    functions: dict[str, list[Sig]] = field(default_factory=dict)
    probes: set[str] = field(default_factory=set)

    def names(self) -> set[str]:
        """Every class, member and function name (the last dotted component)."""
        paths = [*self.classes, *self.methods, *self.properties, *self.enums, *self.functions]
        return {n for p in paths if not (n := p.rsplit(".", 1)[-1]).startswith("__")}

    def enum_members(self) -> set[str]:
        return {p.rsplit(".", 1)[-1] for p in self.enums}


def parse_dump(text: str) -> Api:
    api = Api("")
    for line in text.splitlines():
        kind, _, rest = line.strip().partition(" ")
        if not kind or kind.startswith("#"):
            continue
        if kind == "version":
            api.version = rest.strip()
        elif kind == "class":
            path, _, tag = rest.partition(" ")
            api.classes[path] = tag or "class"
        elif kind == "method":
            path, sig = parse_sig(rest)
            api.methods.setdefault(path, []).append(sig)
        elif kind == "function":
            path, sig = parse_sig(rest)
            api.functions.setdefault(path, []).append(sig)
        elif kind == "property":
            path, _, mode = rest.partition(" ")
            api.properties[path] = mode.strip() == "rw"
        elif kind == "enum":
            path, _, value = rest.partition("=")
            api.enums[path.strip()] = int(value)
        elif kind == "buffer":
            api.buffers.add(rest.strip())
        elif kind == "probe":
            api.probes.add(rest.strip())
        else:
            raise ValueError(f"unknown line in a signature dump: {line!r}")
    return api


# --------------------------------------------------------------------------- uses


KINDS = ("call", "new", "subclass", "override", "get", "set", "enum", "function", "buffer", "probe")


@dataclass(frozen=True)
class Use:
    """One way edge-mer uses one TensorRT API item.

    ``kind``: ``call`` a method, ``new`` a class (``api`` is the class), ``subclass`` a class
    subclassed in Python (its ``__init__`` called with ``args`` besides ``self``),
    ``override`` a virtual method in a Python subclass (TensorRT calls it with ``args``),
    ``get``/``set`` a
    property, ``enum`` a member, ``function`` a module function, ``buffer`` the buffer
    protocol, ``probe`` a behaviour :mod:`trt_dump` tried. ``args``: positional arguments at
    the call site. ``branch``: the ``TrtVersion`` predicate that selects the code path
    (``"not named_tensors"``; empty = every version). ``optional``: looked up with a default,
    so its absence is handled. ``implicit``: used through Python syntax (``str(x)``,
    ``memoryview(x)``, iteration, an argument conversion), which the AST scan cannot see.
    """

    api: str
    kind: str
    where: str
    args: int = 0
    branch: str = ""
    optional: bool = False
    implicit: bool = False
    note: str = ""

    @property
    def name(self) -> str:
        return self.api.rsplit(".", 1)[-1]


def branch_applies(branch: str, version: object) -> bool:
    """Evaluate ``"named_tensors"``, ``"not binding_api"`` or ``"a or b"`` on a TrtVersion."""
    if not branch:
        return True
    return any(
        (not getattr(version, t[4:])) if t.startswith("not ") else bool(getattr(version, t))
        for t in (part.strip() for part in branch.split(" or "))
    )


def _accepts(sigs: Iterable[Sig], n: int) -> bool:
    return any(s.accepts(n) for s in sigs)


def find(api: Api, use: Use) -> tuple[bool, str]:
    """(present with a fitting signature?, what the real API has: arity or why not)."""
    sigs: list[Sig] | None = None
    if use.kind in ("new", "subclass"):
        sigs = api.methods.get(f"{use.api}.__init__")
    elif use.kind in ("call", "override"):
        sigs = api.methods.get(use.api)
    elif use.kind == "function":
        sigs = api.functions.get(use.api)
    elif use.kind == "get":
        return (use.api in api.properties, "property" if use.api in api.properties else "absent")
    elif use.kind == "set":
        if use.api not in api.properties:
            return False, "absent"
        return (api.properties[use.api], "rw" if api.properties[use.api] else "read-only")
    elif use.kind == "enum":
        return (
            use.api in api.enums,
            f"= {api.enums[use.api]}" if use.api in api.enums else "absent",
        )
    elif use.kind == "buffer":
        return use.api in api.buffers, "buffer" if use.api in api.buffers else "no buffer"
    elif use.kind == "probe":
        return use.api in api.probes, "yes" if use.api in api.probes else "no"
    if not sigs:
        return False, "absent"
    arities = "/".join(dict.fromkeys(s.arity() for s in sigs))
    if _accepts(sigs, use.args):
        return True, arities
    return False, f"takes {arities}, called with {use.args}"


@dataclass(frozen=True)
class Cell:
    used: bool
    present: bool
    real: str

    @property
    def ok(self) -> bool:
        return self.present or not self.used

    def text(self, optional: bool = False) -> str:
        if self.used and self.present:
            return f"✓ {self.real}" if self.real[:1].isdigit() else "✓"
        if self.used:
            return "— (skipped)" if optional and self.real == "absent" else f"✗ {self.real}"
        return f"({self.real})" if self.present else "—"


def check_use(use: Use, api: Api, version: object) -> Cell:
    present, real = find(api, use)
    cell = Cell(branch_applies(use.branch, version), present, real)
    if use.optional and cell.used and not present and real == "absent":
        return Cell(False, False, real)
    return cell


# --------------------------------------------------------------------------- the AST scan


@dataclass(frozen=True)
class Occurrence:
    """One place a source file touches a name: ``kind`` call | get | set | str | override |
    dynamic (``getattr(obj, variable)``; ``name`` is the object's source text)."""

    name: str
    kind: str
    line: int
    args: int = 0


def scan_source(source: str) -> list[Occurrence]:
    tree = ast.parse(source)
    out: list[Occurrence] = []
    callees: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            nargs = len(node.args) + len(node.keywords)
            if isinstance(node.func, ast.Attribute):
                callees.add(id(node.func))
                out.append(Occurrence(node.func.attr, "call", node.lineno, nargs))
            elif isinstance(node.func, ast.Name) and node.func.id == "getattr" and node.args:
                key = node.args[1] if len(node.args) > 1 else None
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    out.append(Occurrence(key.value, "get", node.lineno))
                elif key is not None:
                    out.append(Occurrence(ast.unparse(node.args[0]), "dynamic", node.lineno))
        elif isinstance(node, ast.ClassDef) and any(
            isinstance(b, ast.Attribute) for b in node.bases
        ):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("__"):
                    n = len(item.args.args) - 1
                    out.append(Occurrence(item.name, "override", item.lineno, n))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and re.fullmatch(r"[A-Z][A-Z0-9_]+", node.value)
        ):
            out.append(Occurrence(node.value, "str", node.lineno))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in callees:
            kind = "set" if isinstance(node.ctx, ast.Store) else "get"
            out.append(Occurrence(node.attr, kind, node.lineno))
    return out


# Methods of Python's own types (list.append, dict.get, str.format, int.real): never read as
# TensorRT calls, though some TensorRT classes have members of the same names.
BUILTIN_NAMES = frozenset(
    n for t in (list, dict, set, tuple, str, bytes, int, float) for n in dir(t)
)

_MATCHES: dict[str, tuple[str, ...]] = {
    "call": ("call", "new", "function"),
    "get": ("get", "enum", "set", "override", "subclass"),
    "set": ("set",),
    "str": ("enum",),
    "override": ("override",),
}


def check_coverage(
    scans: dict[str, list[Occurrence]],
    uses: Iterable[Use],
    trt_names: set[str],
    enum_members: set[str],
    ignored: dict[tuple[str, str], str],
) -> list[str]:
    """Problems: TensorRT names in the code that no use covers, and stale or wrong uses."""
    uses = list(uses)
    problems = []
    by_file: dict[str, list[Use]] = {}
    for u in uses:
        by_file.setdefault(u.where, []).append(u)
    for path, occs in scans.items():
        here = by_file.get(path, [])
        for o in occs:
            if o.kind == "dynamic":  # the members it may name are listed in any file
                cls = o.name.rsplit(".", 1)[-1]
                if (path, o.name) in ignored or any(u.api.startswith(cls + ".") for u in uses):
                    continue
                problems.append(f"{path}:{o.line}: getattr({o.name}, <variable>) is not reviewed")
                continue
            names = enum_members if o.kind == "str" else trt_names
            if o.name not in names or o.name in BUILTIN_NAMES or (path, o.name) in ignored:
                continue
            kinds = _MATCHES[o.kind]
            if any(u.api.split(".")[0] == o.name for u in uses):
                continue  # a class or enum whose members are listed (trt.BuilderFlag)
            if not any(u.name == o.name and u.kind in kinds for u in here):
                problems.append(
                    f"{path}:{o.line}: {o.kind} {o.name!r} is a TensorRT name that "
                    "trt_uses.USES does not list (add a Use, or an IGNORED entry saying why)"
                )
    seen = {(path, o.name) for path, occs in scans.items() for o in occs}
    problems += [
        f"{p}: IGNORED entry {n!r} matches nothing" for p, n in ignored if (p, n) not in seen
    ]
    for u in uses:
        if u.implicit:
            continue
        occs = scans.get(u.where)
        if occs is None:
            problems.append(f"{u.api}: {u.where} is not among the scanned files")
            continue
        if u.kind == "new":
            sites = [o for o in occs if o.kind == "call" and o.name == u.name]
        elif u.kind == "subclass":
            sites = [o for o in occs if o.kind == "get" and o.name == u.name]
        elif u.kind in ("call", "function", "override"):
            kind = "override" if u.kind == "override" else "call"
            sites = [o for o in occs if o.kind == kind and o.name == u.name]
        elif u.kind == "enum":
            sites = [o for o in occs if o.kind in ("get", "str") and o.name == u.name]
        else:
            sites = [o for o in occs if o.kind == u.kind and o.name == u.name]
        if not sites:
            problems.append(f"{u.api} ({u.kind}): no longer used in {u.where}; remove the Use")
        elif u.kind in ("call", "new", "function", "override"):
            wrong = [o for o in sites if o.args != u.args]
            shared = (u.where, u.name) in ignored  # other, non-TensorRT uses of the name
            if (wrong and not shared) or len(wrong) == len(sites):
                lines = ", ".join(f"line {o.line}: {o.args}" for o in wrong)
                problems.append(f"{u.api}: the list says {u.args} argument(s), {u.where} {lines}")
    return problems
