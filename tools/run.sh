#!/usr/bin/env bash
# Install (first time) and start the guidance window replaying the bundled recording.
# Extra arguments go to `iousguide replay`, e.g. `bash tools/run.sh recordings/two_lesions.mp4`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ] && [ -z "${QT_QPA_PLATFORM:-}" ]; then
  # No screen (a server, CI): run the same replay offscreen and leave a screenshot to look at.
  mkdir -p out
  echo "run: no display found; replaying offscreen, screenshot in out/replay.png" >&2
  # (the offscreen plugin warns once per resize that it cannot propagate size hints: noise here)
  QT_QPA_PLATFORM=offscreen exec .venv/bin/iousguide replay "$@" --frames 150 --screenshot out/replay.png \
    --stats out/replay_stats.json 2> >(grep -v "propagateSizeHints" >&2)
fi
exec .venv/bin/iousguide replay "$@"
