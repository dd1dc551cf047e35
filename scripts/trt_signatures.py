"""Check edge-mer's TensorRT calls against the real Python bindings of each TensorRT version.

usage: python scripts/trt_signatures.py [--cache DIR] [--check]
       (make trt-signatures; not part of make test: it downloads ~5 MB of wheels)

1. ``pip download --no-deps`` the compiled bindings wheels (no NVIDIA libraries inside) of
   :data:`VERSIONS` into ``--cache`` (default ``.cache/trt-bindings``, ignored by git);
2. dump each one's API with :mod:`trt_dump` (imports it over stub libnvinfer libraries, in
   a fresh interpreter per version; needs gcc and binutils);
3. write the part edge-mer touches to ``scripts/trt-api/<version>.txt`` and the names of
   everything to ``scripts/trt-api/names.txt`` (the test suite checks against these offline);
4. verify every entry of :data:`trt_uses.USES` per version, that the AST scan of the code
   finds no TensorRT name the list misses, and that the tests' fake TensorRT classes have
   the real members and arities;
5. write the table into docs/engines.md between the ``trt-signatures`` markers.

``--check`` skips 1-3 and 5: it verifies against the committed snapshots and fails if the
docs table is not what they give (the test suite runs this). Exit 1 on any problem.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import trt_api  # noqa: E402
import trt_fakes  # noqa: E402
import trt_uses  # noqa: E402

# version -> (pip requirement, what ships it)
VERSIONS = {
    "8.6.1": ("tensorrt-bindings==8.6.1", "JetPack 6.0 (8.6.2)"),
    "10.3.0": ("tensorrt-cu12-bindings==10.3.0", "JetPack 6.1/6.2"),
    "10.13.0.35": ("tensorrt-cu12-bindings==10.13.0.35", "JetPack 7 (Thor)"),
    "11.4.0.106": ("tensorrt-cu12-bindings==11.4.0.106", "current"),
}
SNAPSHOTS = HERE / "trt-api"
DOC = REPO / "docs" / "engines.md"
BEGIN, END = "<!-- trt-signatures:begin -->", "<!-- trt-signatures:end -->"
PREDICATES = (
    "named_tensors",
    "binding_api",
    "memory_pool_api",
    "explicit_batch_flag_needed",
    "strongly_typed_only",
    "int8_flag",
    "fp16_flag",
)


def fetch(version: str, cache: Path) -> Path:
    """The unpacked wheel of ``version`` (downloaded once)."""
    spec = VERSIONS[version][0]
    root = cache / version
    if (root / "tensorrt_bindings").is_dir():
        return root
    wheels = cache / "wheels"
    name = spec.split("==")[0].replace("-", "_")
    found = sorted(wheels.glob(f"{name}-{version}-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        if subprocess.run([*cmd, "-q", "-d", str(wheels), spec]).returncode != 0:
            sys.exit(
                f"cannot download {spec} for Python {sys.version_info.major}."
                f"{sys.version_info.minor} (8.6.1 has wheels up to 3.11 only)"
            )
        found = sorted(wheels.glob(f"{name}-{version}-*.whl"))
    with zipfile.ZipFile(found[0]) as z:
        z.extractall(root)
    return root


def dump(version: str, cache: Path) -> str:
    out = cache / f"{version}.txt"
    if not out.is_file():
        root = fetch(version, cache)
        res = subprocess.run(
            [sys.executable, str(HERE / "trt_dump.py"), str(root), str(cache / "stubs" / version)],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            sys.exit(f"dumping TensorRT {version} failed:\n{res.stderr}")
        out.write_text(res.stdout)
    return out.read_text()


def wanted() -> tuple[set[str], set[str]]:
    """API paths and enum classes that the uses and the fakes refer to."""
    paths, enums = set(), set()
    for u in trt_uses.USES:
        paths |= {u.api, f"{u.api}.__init__", u.api.split(".")[0]}
        if u.kind == "enum":
            enums.add(u.api.rsplit(".", 1)[0])
    for (path, cls), real in trt_uses.FAKES.items():
        for m in trt_fakes.fake_members((REPO / path).read_text(), cls):
            full = f"{real}.{m.name}" if real else m.name
            (enums if m.kind == "enum" else paths).add(full)
            paths.add(real)
    return paths, enums


def snapshot(text: str) -> str:
    """The lines of a full dump that the uses and the fakes refer to: the committed
    snapshot the offline check (and the test suite) reads."""
    paths, enums = wanted()
    out = []
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        path = rest.split("(")[0].split(" ")[0]
        owner = path.rsplit(".", 1)[0]
        if (
            kind in ("version", "function", "probe")
            or path in paths
            or (kind in ("enum", "property") and owner in enums)
            or (kind == "class" and path in enums)
        ):
            out.append(line)
    return "\n".join(out) + "\n"


def load(check_only: bool, cache: Path) -> tuple[list[trt_api.Api], set[str], set[str]]:
    """The APIs per version, all TensorRT names, and all enum member names."""
    if check_only:
        apis = [trt_api.parse_dump((SNAPSHOTS / f"{v}.txt").read_text()) for v in VERSIONS]
        names, members = set(), set()
        for line in (SNAPSHOTS / "names.txt").read_text().splitlines():
            kind, _, name = line.partition(" ")
            (members if kind == "enum" else names).add(name)
        return apis, names | members, members
    full = [trt_api.parse_dump(dump(v, cache)) for v in VERSIONS]
    names = set().union(*(a.names() for a in full))
    members = set().union(*(a.enum_members() for a in full))
    SNAPSHOTS.mkdir(exist_ok=True)
    for v in VERSIONS:
        (SNAPSHOTS / f"{v}.txt").write_text(snapshot(dump(v, cache)))
    lines = [f"enum {n}" for n in sorted(members)] + [f"name {n}" for n in sorted(names - members)]
    (SNAPSHOTS / "names.txt").write_text("\n".join(lines) + "\n")
    return full, names, members


def verify(apis: list[trt_api.Api], names: set[str], members: set[str]) -> list[str]:
    from edge_mer.runners.tensorrt.device import TrtVersion

    problems = []
    scans = {p: trt_api.scan_source((REPO / p).read_text()) for p in trt_uses.SCANNED}
    problems += trt_api.check_coverage(scans, trt_uses.USES, names, members, trt_uses.IGNORED)
    for use in trt_uses.USES:
        for api in apis:
            cell = trt_api.check_use(use, api, TrtVersion.parse(api.version))
            if not cell.ok:
                problems.append(f"TensorRT {api.version}: {use.api} ({use.kind}): {cell.real}")
    for (path, cls), real in trt_uses.FAKES.items():
        members_ = trt_fakes.fake_members((REPO / path).read_text(), cls)
        for p in trt_fakes.check_fake(members_, real, apis, trt_uses.FAKE_INTERNAL.__contains__):
            problems.append(f"{path} {cls}: {p}")
    return problems + check_fake_module(apis)


def check_fake_module(apis: list[trt_api.Api]) -> list[str]:
    """test_engine's FakeTrt(version) against each real version: enum members (and the
    values of the network flags, which the build shifts into a bit mask), logger severities."""
    sys.path.insert(0, str(REPO))
    from tests.edge.runners.test_engine import FakeTrt

    problems = []
    for api in apis:
        fake = FakeTrt(api.version)
        for enum in ("NetworkDefinitionCreationFlag", "BuilderFlag", "MemoryPoolType"):
            for member, value in vars(getattr(fake, enum)).items():
                real = api.enums.get(f"{enum}.{member}")
                if real is None:
                    problems.append(f"FakeTrt({api.version}).{enum}.{member}: not in TensorRT")
                elif enum == "NetworkDefinitionCreationFlag" and real != value:
                    problems.append(
                        f"FakeTrt({api.version}).{enum}.{member} = {value}, TensorRT: {real}"
                    )
        severities = [m.name for m in fake.ILogger.Severity]
        real_sev = [e.rsplit(".", 1)[-1] for e in api.enums if e.startswith("ILogger.Severity.")]
        if severities != real_sev:
            problems.append(f"FakeTrt({api.version}).ILogger.Severity: {severities} != {real_sev}")
    return problems


def table(apis: list[trt_api.Api]) -> str:
    from edge_mer.runners.tensorrt.device import TrtVersion

    versions = [TrtVersion.parse(a.version) for a in apis]
    head = " | ".join(f"{a.version}<br>{VERSIONS[a.version][1]}" for a in apis)
    out = [
        BEGIN,
        "<!-- written by scripts/trt_signatures.py (make trt-signatures); do not edit -->",
        "",
        "Which code branch serves which version (`TrtVersion` predicates, "
        "edge/runners/tensorrt/device.py):",
        "",
        f"| predicate | {' | '.join(a.version for a in apis)} |",
        "|---|" + "---|" * len(apis),
    ]
    for pred in PREDICATES:
        cells = " | ".join("yes" if getattr(v, pred) else "no" for v in versions)
        out.append(f"| `{pred}` | {cells} |")
    out += [
        "",
        "Every TensorRT item edge-mer uses, per version: `✓ n` used on this version and "
        "present, taking `n` positional arguments (`a-b`: with defaults; `/`: overloads); "
        "`(…)` present, but another branch serves this version; `—` absent and not used; "
        "`✗` a mismatch (the check fails).",
        "",
        f"| API | use | args | where | branch | {head} |",
        "|---|---|---|---|---|" + "---|" * len(apis),
    ]
    for u in trt_uses.USES:
        cells = []
        for api, v in zip(apis, versions, strict=True):
            cells.append(trt_api.check_use(u, api, v).text(u.optional))
        args = str(u.args) if u.kind in ("call", "new", "subclass", "override", "function") else ""
        where = u.where.removeprefix("edge/").removesuffix(".py")
        branch = f"`{u.branch}`" if u.branch else "all"
        out.append(f"| `{u.api}` | {u.kind} | {args} | {where} | {branch} | {' | '.join(cells)} |")
    out.append(END)
    return "\n".join(out)


def with_table(doc: str, block: str) -> str:
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{DOC}: add the markers {BEGIN} and {END} where the table goes")
    return doc[: doc.index(BEGIN)] + block + doc[doc.index(END) + len(END) :]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=REPO / ".cache" / "trt-bindings")
    ap.add_argument("--check", action="store_true", help="offline, against the snapshots")
    args = ap.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    apis, names, members = load(args.check, args.cache)
    problems = verify(apis, names, members)
    doc = DOC.read_text()
    new = with_table(doc, table(apis))
    if args.check and new != doc:
        problems.append(f"{DOC.name}: the table is stale: run make trt-signatures")
    elif not args.check:
        DOC.write_text(new)
    for p in problems:
        print(p)
    print(f"TensorRT {', '.join(VERSIONS)}: {len(trt_uses.USES)} uses, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
