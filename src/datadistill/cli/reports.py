"""The commands that read run folders and their saved evaluations: ``report`` (one HTML file)
and ``compare`` (accuracy against examples per class and stored bytes)."""
from __future__ import annotations

import sys


def cmd_report(args) -> int:
    from ..report import write_report

    out = write_report(args.runs, args.out, title=args.title, load_real=not args.no_real)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, self-contained)")
    return 0


def cmd_compare(args) -> int:
    from ..report.compare import compare

    table, _ = compare(args.runs, by=args.by, png=args.png)
    print(table)
    if args.png:
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


def add_report(sub) -> None:
    r = sub.add_parser("report", help="one self-contained HTML report of run folders")
    r.add_argument("runs", nargs="+", metavar="RUN", help="run folders, summary folders or benchmark rows (bench/runs/<suite>/<row>/s<seed>)")
    r.add_argument("--out", required=True, help="the HTML file to write")
    r.add_argument("--title", default=None)
    r.add_argument("--no-real", action="store_true",
                   help="do not load the real data (graph / recommender drawings compare with it)")
    r.set_defaults(func=cmd_report)


def add_compare(sub) -> None:
    c = sub.add_parser("compare", help="accuracy against examples per class and stored bytes",
                       description="Each RUN (run or summary folder) needs its saved evaluations "
                                   "(`datadistill evaluate RUN` writes RUN/evaluations/*.json); "
                                   "every point is labelled with its protocol.")
    c.add_argument("runs", nargs="+", metavar="RUN", help="run folders, summary folders or benchmark rows (bench/runs/<suite>/<row>/s<seed>)")
    c.add_argument("--by", choices=("examples", "bytes"), default="examples",
                   help="sort the table by examples per class or by stored bytes")
    c.add_argument("--png", default=None, metavar="FILE",
                   help="also plot accuracy vs examples per class and vs stored bytes")
    c.set_defaults(func=cmd_compare)
