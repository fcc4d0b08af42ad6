"""The ``datadistill`` command: parses, calls the library, prints. Nothing else lives here."""
# One module per command group, each with its ``cmd_*`` functions and the ``add_*`` that declares
# their options: distill (distill, baseline), evaluate, reports (report, compare), summaries
# (show, compact), catalog (list), demo, apps (app); _common holds what they share.
from __future__ import annotations

import argparse
import sys

from ._common import EXIT_INTERRUPTED, err
from .apps import add_app, app_names
from .catalog import add_list
from .demo import add_demo
from .distill import add_baseline, add_distill
from .evaluate import add_evaluate
from .reports import add_compare, add_report
from .summaries import add_compact, add_show

__all__ = ["EXIT_INTERRUPTED", "app_names", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="datadistill", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for add in (add_distill, add_evaluate, add_baseline, add_report, add_compare, add_show,
                add_compact, add_list, add_demo, add_app):  # (the order of `datadistill --help`)
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from ..errors import DatadistillError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatadistillError, FileNotFoundError) as e:
        return err(str(e))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
