"""Layering rules: Qt lives only in iousguide/display; the headless pipeline never loads it."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "iousguide"
QT_MODULES = ("PySide6", "PyQt5", "PyQt6", "pyqtgraph", "shiboken6")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_qt_outside_display_package():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "display" in path.relative_to(PACKAGE).parts:
            continue
        bad = _imports(path) & set(QT_MODULES)
        if bad:
            offenders.append(f"{path.relative_to(PACKAGE)}: {sorted(bad)}")
    assert not offenders, offenders


def test_pipeline_and_cli_parser_do_not_load_qt():
    code = (
        "import sys, iousguide.pipeline, iousguide.acquisition, iousguide.cli\n"
        "iousguide.cli.build_parser()\n"
        f"loaded = [m for m in {QT_MODULES!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
