"""The window under a real X server (Debian's Xvfb): Qt must come up on its normal ``xcb`` platform.

Proves that the system libraries Qt's xcb plugin needs are installed (see
PLATFORM.md). Skipped visibly when Xvfb is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import shared_file

SCRIPT = r"""
import json, sys
from iousguide.acquisition import open_source
from iousguide.display.app import application
from iousguide.display.window import GuidanceWindow, WindowOptions
from iousguide.display.worker import ReplayWorker

app = application()
source = open_source(sys.argv[1])
window = GuidanceWindow(ReplayWorker(source, None, analyse=False), WindowOptions(frames=10, source_label="xvfb"))
window.resize(1366, 768)
window.show()
app.exec()
print(json.dumps({"platform": app.platformName(), "displayed": window.displayed_count,
                  "screen": [app.primaryScreen().size().width(), app.primaryScreen().size().height()]}))
source.close()
"""


@pytest.mark.xvfb
def test_window_opens_on_xcb_under_xvfb():
    if shutil.which("Xvfb") is None or shutil.which("xvfb-run") is None:
        pytest.skip("Xvfb / xvfb-run not installed (Debian package: xvfb)")
    video = shared_file("liver_sweep/liver_sweep_imfusion_h264.mp4")
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1366x768x24", sys.executable, "-c", SCRIPT, str(video)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["platform"] == "xcb"
    assert data["screen"] == [1366, 768]
    assert data["displayed"] >= 10
