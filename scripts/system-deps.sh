#!/usr/bin/env bash
# Debian packages the runtime tests use for real: a mosquitto broker, Debian's
# GStreamer-enabled OpenCV (the JetPack arrangement, in a --system-site-packages venv),
# GStreamer's test sources, and systemd-analyze for the unit checks.
# Installs only what is missing, only as root with apt-get; elsewhere those tests skip.
set -euo pipefail
PKGS=(mosquitto python3-opencv python3-venv systemd gstreamer1.0-plugins-base
      gstreamer1.0-plugins-good)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "system-deps: not root or no apt-get; tests needing ${missing[*]} will skip" >&2
    exit 0
fi
echo "system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
