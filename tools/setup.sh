#!/usr/bin/env bash
# Install everything iousguide needs on this machine: Debian packages (when we may),
# a virtual environment in .venv, and the package with its Python dependencies.
#   bash tools/setup.sh          runtime (display) only
#   bash tools/setup.sh --test   plus what the test suite needs (Xvfb, ffmpeg, pytest & co.)
# Re-running is cheap: nothing is reinstalled when it is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

# Qt's xcb platform plugin needs these on a real X server (PLATFORM.md); OpenGL for pyqtgraph.
runtime_pkgs="libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xinerama0
 libxcb-randr0 libxcb-shape0 libxcb-xkb1 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 libgl1 libegl1"
# Tests: a real X server for the xcb test, ffmpeg as a loopback stream sender, xauth for xvfb-run.
test_pkgs="xvfb xauth ffmpeg"

pkgs="$runtime_pkgs"
[ "$want_test" = 1 ] && pkgs="$pkgs $test_pkgs"

missing=""
if command -v dpkg-query >/dev/null 2>&1; then
  for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
fi
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian packages:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    echo "setup: installing Debian packages with sudo:$missing" >&2
    sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "setup: warning: missing Debian packages (install them as root):$missing" >&2
  fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
extras=""
[ "$want_test" = 1 ] && extras="[test]"
stamp=".venv/.iousguide-installed${extras:+-test}"
hash=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$hash" ]; then
  echo "setup: installing Python packages into .venv (first run takes a few minutes)" >&2
  log=.venv/pip-install.log
  if ! { .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip \
         && .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extras"; } >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" | tail -20 >&2
    echo "setup: error: pip could not install the Python packages (log: $log)" >&2
    exit 1
  fi
  .venv/bin/python -c "import iousguide, cv2, av, pydicom, nrrd, pyigtl, PySide6, pyqtgraph" \
    || { echo "setup: error: the Python packages did not install (log: $log)" >&2; exit 1; }
  echo "$hash" > "$stamp"
fi
