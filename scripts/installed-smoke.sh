#!/usr/bin/env bash
# What users install is what we test: build the sdist and the wheel as pip does, install the
# wheel (non-editable) into fresh virtual environments, one per extra, and run the commands a
# user runs there. The [convert] environment makes the bundle that the [pi] environment runs.
#
# usage: scripts/installed-smoke.sh [WORKDIR]   (default: .smoke/ here, or ~/.cache/edge-mer-smoke
#        for a checkout under /tmp, which install-service rightly refuses for a service;
#        emptied first and removed after)
# env:   PYTHON (python3), TORCH_SPEC (torch==2.13.0), KEEP=1 keeps WORKDIR.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
# The service refuses executables under /tmp (PrivateTmp): a checkout there (CI may clone
# into /tmp) smokes in the user's cache folder instead.
case "$(pwd -P)/" in
    /tmp/* | /var/tmp/*) default_work="${XDG_CACHE_HOME:-$HOME/.cache}/edge-mer-smoke" ;;
    *) default_work=.smoke ;;
esac
WORK=$(realpath -m "${1:-$default_work}")
rm -rf "$WORK"
mkdir -p "$WORK"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
t0=$SECONDS
step() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - t0)); }
# Quiet pip, but keep its errors.
pipq() { "$@" -q --disable-pip-version-check 2>&1 | grep -v "^WARNING: Location" || true; }

step "build sdist, then the wheel from the sdist (what pip does with a source release)"
"$PYTHON" -m venv "$WORK/build-env"
pipq "$WORK/build-env/bin/pip" install build
"$WORK/build-env/bin/python" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 \
    || { cat "$WORK/build.log"; exit 1; }
WHEEL=$(ls "$WORK"/dist/edge_mer-*.whl)
ls -l "$WORK/dist"
# The frame loop is compiled into the wheel (setup.py, mypyc): every module of its list.
"$WORK/build-env/bin/python" - "$WHEEL" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
native = [n for n in names if n.endswith(".so")]
print("compiled:", ", ".join(sorted(n.rsplit("/", 1)[-1].split(".")[0] for n in native)))
assert len(native) == 9 and any("_native__mypyc" in n for n in native), native
EOF

step "[convert] with the CPU torch: synth, train, convert --int8"
"$PYTHON" -m venv "$WORK/convert"
pipq "$WORK/convert/bin/pip" install "$TORCH_SPEC"
pipq "$WORK/convert/bin/pip" install "$WHEEL[convert]"
C="$WORK/convert/bin/edge-mer"
(
    cd "$WORK"
    "$C" synth --out clips --subjects 2 --clips-per-emotion 1 --size 48
    "$C" train clips/casme2 --out model.safetensors --cnn-epochs 1 --rnn-epochs 2
    "$C" convert model.safetensors --out bundle --int8 --calib clips/casme2
)

step "[convert] + pytest: the frame loop's tests against the installed, compiled modules"
pipq "$WORK/convert/bin/pip" install "pytest>=7"
"$WORK/convert/bin/python" -c 'from edge_mer.native import compiled_modules as c
m = c(); assert all(m.values()), m; print("frame loop compiled:", len(m), "modules")'
# From the checkout's root: the tests import edge_mer, which here is the installed wheel
# (the sources live in edge/, not edge_mer/).
"$WORK/convert/bin/python" -m pytest -q -p no:cacheprovider tests/edge/pipeline \
    tests/edge/bench/test_spotting.py tests/edge/test_native.py

step "[convert]: edge-mer experiment, LOSO with [train] streams = true (training subjects' streams only)"
"$C" synth --out "$WORK/exp" --layout casme2 --subjects 3 --clips-per-emotion 2 --size 32 \
    --subject-streams 10
cat > "$WORK/study.toml" <<EOF
[study]
name = "smoke"
[data]
casme2 = "$WORK/exp/casme2"
[protocol]
kind = "loso"
dataset = "casme2"
label_map = "megc3"
face = "none"
[[model]]
name = "lstm"
arch = "cnn_lstm"
config = { input = { height = 32, width = 32, channels = 1, fps = 50.0, window = 6 }, cnn = "small", width_mult = 0.5, feature_dim = 16, hidden = 16 }
[train]
cnn_epochs = 1
head_epochs = 2
selection = "fixed"
streams = true
[deploy]
int8 = true
calib_clips = 4
EOF
"$C" experiment run "$WORK/study.toml" --out "$WORK/study-out"
"$WORK/convert/bin/python" - "$WORK/study-out" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
jobs = sorted(p.parent for p in out.glob("*/seed=*/fold=*/DONE.json"))
assert len(jobs) == 3, jobs  # LOSO over the 3 synthetic subjects
for job in jobs:
    fold = json.loads((job / "fold.json").read_text())["fold"]
    used = json.loads((job / "metrics.json").read_text())["streams"]["subjects"]
    assert used == sorted(fold["train_subjects"]), (used, fold)
    assert not set(used) & set(fold["test_subjects"]), "a test subject's stream"
    assert "none" in json.loads((job / "bundle" / "manifest.json").read_text())["labels"]
print("experiment: every fold trained on its training subjects' streams only")
EOF

step "[pi]: the device install, no torch (doctor, inspect, run, bench, spot-eval, validate-config, install-service)"
"$PYTHON" -m venv "$WORK/pi"
pipq "$WORK/pi/bin/pip" install "$WHEEL[pi]"
P="$WORK/pi/bin/edge-mer"
if "$WORK/pi/bin/python" -c "import torch" 2>/dev/null; then
    echo "FAIL: torch is importable in the [pi] environment" >&2
    exit 1
fi
(
    cd "$WORK"
    "$P" doctor
    "$P" inspect bundle
    "$P" run --bundle bundle --source 'synthetic://?seconds=3' --events events.jsonl
    test -f events.jsonl || { echo "FAIL: run wrote no events file" >&2; exit 1; }
    "$P" bench bundle --frames 200 --json bench.json
    test -s bench.json
    # The replay is in the model's camera format; gray frames through run as well.
    "$WORK/pi/bin/python" -c 'import json; s = json.load(open("bench.json"))["settings"]
assert s["frame_format"] == "auto" and "&format=" in s["source"], s'
    "$P" run --bundle bundle --source 'synthetic://?seconds=2&format=gray' --events gray.jsonl
    test -f gray.jsonl || { echo "FAIL: run on gray frames wrote no events file" >&2; exit 1; }
    # Spotting on an unseen synthetic subject's stream, through the installed pipeline.
    "$P" spot-eval bundle --subjects 1 --seconds 4 --distractor-seconds 2 --fps 50 --json spot.json
    test -s spot.json
    # The example config shipped in the wheel, then one that names this bundle (files checked).
    "$P" validate-config --no-files "$("$WORK/pi/bin/python" -c \
        'import importlib.resources as r; print(r.files("edge_mer.systemd") / "edge-mer.toml")')"
    printf '[model]\nbundle = "%s"\n[source]\nuri = "synthetic://?seconds=1"\n' \
        "$WORK/bundle" >daemon.toml
    "$P" validate-config daemon.toml --keys >/dev/null
    "$P" install-service --dry-run --bundle "$WORK/bundle" --source v4l2:///dev/video0 \
        --prefix "$WORK/etc"
)

step "base install, no extras: a command that needs an extra names it (exit 2, one line)"
"$PYTHON" -m venv "$WORK/base"
pipq "$WORK/base/bin/pip" install "$WHEEL"
B="$WORK/base/bin/edge-mer"
# expect_extra EXTRA ARGS...: exit 2 and exactly one stderr line naming edge-mer[EXTRA].
expect_extra() {
    local extra=$1 out rc
    shift
    set +e
    out=$(cd "$WORK" && "$B" "$@" 2>&1 >/dev/null)
    rc=$?
    set -e
    echo "edge-mer $1: $out"
    if [ $rc -ne 2 ] || [ "$(printf '%s\n' "$out" | wc -l)" -ne 1 ] \
        || ! grep -qF "edge-mer[$extra]" <<<"$out"; then
        echo "FAIL: edge-mer $*: expected one line naming edge-mer[$extra] and exit 2, got exit $rc" >&2
        exit 1
    fi
}
expect_extra cpu run --bundle bundle --source 'synthetic://?seconds=1'
expect_extra cpu bench bundle --frames 20
expect_extra cpu validate-config daemon.toml
expect_extra convert synth --out base-clips
expect_extra convert convert model.safetensors --out base-bundle
# What needs no extra works in the base install.
(
    cd "$WORK"
    "$B" inspect bundle >/dev/null
    "$B" validate-config --no-files daemon.toml >/dev/null
    "$B" doctor >/dev/null
)

step "base install: the dataset tools need no extra; the shipped MEGC 2019 list loads"
"$WORK/base/bin/edge-mer" datasets maps megc3 >/dev/null
"$WORK/base/bin/python" -c 'from edge_mer.calibration.datasets import official_list
assert len(official_list()) == 442'

step "installed-package smoke passed"
