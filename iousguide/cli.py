"""Command line: ``iousguide <command> ...`` (argparse only; logic lives in the packages).

Each sub-command lives in ``iousguide/commands/<name>.py`` and defines
``register(subparsers)`` which adds its parser and sets ``func(args) -> int``.
Errors a user can cause are :class:`~iousguide.errors.IousguideError`: printed
as one line, exit code 2, no traceback (``IOUSGUIDE_DEBUG=1`` shows it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from iousguide import __version__
from iousguide.errors import IousguideError

#: command modules, in help order; each registers one or more sub-commands
COMMAND_MODULES = (
    "info",
    "calibrate",
    "analyze",
    "evaluate",
    "flr",
    "record",
    "display",
)


class _ArgumentParser(argparse.ArgumentParser):
    """Usage errors exit 2 with one line (argparse's own message, without the usage block)."""

    def error(self, message: str):  # noqa: D102 - argparse hook
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="iousguide",
        description="Intraoperative ultrasound guidance for parenchymal-sparing liver surgery.",
    )
    parser.add_argument("--version", action="version", version=f"iousguide {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"iousguide.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"iousguide.commands.{name}":
                continue  # command not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except IousguideError as exc:
        if os.environ.get("IOUSGUIDE_DEBUG"):
            traceback.print_exc()
        print(f"iousguide: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("iousguide: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # e.g. `iousguide analyze ... | head`: not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except MemoryError:
        print("iousguide: error: out of memory (input too large?)", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug of ours: still one line for the user
        if os.environ.get("IOUSGUIDE_DEBUG"):
            traceback.print_exc()
        print(
            f"iousguide: internal error: {type(exc).__name__}: {exc} (set IOUSGUIDE_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
