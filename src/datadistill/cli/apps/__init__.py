"""``datadistill app NAME ...``: the applications of summaries in ``datadistill.apps``.

One module here per application (``continual``, ``federated``, ``nas``, ``privacy``): its
``build_parser`` and ``main(argv)`` parse the command line, call the library in
``datadistill.apps`` and print; ``_args`` holds what they share."""
from __future__ import annotations

import argparse
from pathlib import Path

from .._common import err


def app_names() -> list[str]:
    """The applications: the modules of this package that define ``main(argv)`` (found in
    their source, nothing imported; helpers such as ``_args`` have none)."""
    import pkgutil

    here = Path(__file__).resolve().parent
    found = []
    for m in pkgutil.iter_modules([str(here)]):
        src = here / f"{m.name}.py"
        if not m.name.startswith("_") and src.is_file() and "\ndef main(" in src.read_text():
            found.append(m.name)
    return sorted(found)


def cmd_app(args) -> int:
    """``datadistill app NAME ...``: imports ``datadistill.cli.apps.NAME`` and hands it the rest
    of the command line (its ``main(argv)`` parses it: ``datadistill app NAME --help``)."""
    import importlib

    known = app_names()
    if args.app not in known:
        return err(f"unknown application {args.app!r}; known: {', '.join(known)}")
    return importlib.import_module(f"{__name__}.{args.app}").main(args.rest)


def add_app(sub) -> None:
    ap = sub.add_parser("app", help="applications of summaries (continual learning, NAS, ...)",
                        description="datadistill app NAME [options]; NAME --help lists its options")
    ap.add_argument("app", metavar="NAME", help="one of: " + ", ".join(app_names()))
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="the application's own options")
    ap.set_defaults(func=cmd_app)
