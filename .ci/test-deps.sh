#!/usr/bin/env bash
# Real parts the runtime tests drive: a mosquitto broker, GStreamer's RTSP server (system python3 + gi),
# headless Chromium + chromedriver; qemu-user-static + mmdebstrap for the arm64 root (tests/test_arm64.py). Idempotent: a dpkg query when everything is there (no apt call).
# As root (CI) missing packages are installed; otherwise they are listed and the tests that need
# them skip (outside CI) with that reason.
set -euo pipefail
DEBS=(mosquitto chromium chromium-driver python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good qemu-user-static mmdebstrap)
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "test-deps: missing Debian packages: ${missing[*]} (as root: apt-get install ${missing[*]}); their tests skip outside CI" >&2
  [ "${CI:-}" = "true" ] && exit 1
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=300 update -qq
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}"
