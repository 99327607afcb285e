"""Start the Qt application and run a guidance window (used by the CLI, tests and tools)."""

from __future__ import annotations

import os
import sys

import PySide6
from PySide6 import QtWidgets

from iousguide.display.window import GuidanceWindow, WindowOptions
from iousguide.display.worker import LiveWorker, ReplayWorker


#: PySide6 6.12.0 on Python < 3.12 drops a reference to None/True/False on every call of a
#: void C++ method (QGraphicsItem.update, setVisible, ...): the window dies with
#: "Fatal Python error: none_dealloc" after a few thousand frames. 6.11.3 is fine.
BROKEN_PYSIDE = ("6.12.0",)


def binding_warning() -> str:
    """A one-line warning when the installed PySide6 is known to crash this window, else ``""``."""
    if PySide6.__version__ in BROKEN_PYSIDE and sys.version_info < (3, 12):
        return (f"PySide6 {PySide6.__version__} has a reference-count bug on Python "
                f"{sys.version_info.major}.{sys.version_info.minor} that crashes long sessions: "
                "install PySide6-Essentials 6.11.3")
    return ""


def application() -> QtWidgets.QApplication:
    """The QApplication (created once). Headless when there is no display."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") and sys.platform.startswith("linux"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    warning = binding_warning()
    if warning:
        print(f"iousguide: warning: {warning}", file=sys.stderr)
    app = QtWidgets.QApplication.instance()
    if app is None:
        app = QtWidgets.QApplication(["iousguide"])
    return app


def make_worker(source, pipeline, options: WindowOptions):
    """A replay worker for random-access recordings, a live worker otherwise."""
    if getattr(source, "random_access", False):
        return ReplayWorker(source, pipeline, speed=options.speed, loop=options.loop, analyse=options.analyse)
    return LiveWorker(source, pipeline, analyse=options.analyse)


def run_window(source, pipeline, options: WindowOptions, *, size_px: tuple[int, int] | None = None) -> dict:
    """Open the window on ``source`` and run the event loop until it closes; return its stats."""
    app = application()
    window = GuidanceWindow(make_worker(source, pipeline, options), options)
    if size_px is not None:
        window.resize(*size_px)
    window.show()
    app.exec()
    return window.stats()
