"""``python -m datadistill.bench {list, run, report}``: the suite's one entry point."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .results import Layout, load_results
from .suites import SuiteError, find_suite, load_suite


def default_bench_dir() -> Path:
    """``bench/`` of the checkout holding the current directory (the first parent with
    ``bench/suites``), else ``./bench``."""
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / "bench" / "suites").is_dir():
            return d / "bench"
    return here / "bench"


def cmd_list(args, layout: Layout) -> int:
    for p in sorted(layout.suites.glob("*.toml")):
        suite = load_suite(p, check=False)
        done = load_results(layout.results_file(suite.name))
        rows = (done or {}).get("rows", {})
        print(f"{suite.name}: {suite.title} ({len(suite.rows)} rows)")
        for r in suite.rows:
            state = rows.get(r.id, {}).get("status", "not run")
            if state == "running":  # started: running here, or interrupted (how far it got)
                from .progress import row_state

                state = row_state(layout.run_dir(suite.name, r.id), r.iterations)
            budget = ", ".join(f"{k} {v}" for k, v in r.budget.items())
            print(f"  {r.id:<28} {r.kind:<8} {r.method:<10} {r.dataset:<15} {budget:<12} {state}")
    return 0


def cmd_run(args, layout: Layout) -> int:
    from .execute import run_suite

    suite = load_suite(find_suite(args.suite, layout.suites))
    failed = run_suite(suite, layout, resume=args.resume, only=args.only,
                       log=lambda m: print(m, file=sys.stderr, flush=True),
                       progress_every=args.progress_every or None)
    return 1 if failed else 0


def cmd_report(args, layout: Layout) -> int:
    from .report import write_report

    root = layout.root.resolve().parent
    out = Path(args.out) if args.out else root / "BENCHMARKS.md"
    parity = Path(args.parity_dir) if args.parity_dir else root / "tests" / "fixtures" / "parity"
    print(write_report(layout.results, out, parity, layout.suites))
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def cmd_row(args, layout: Layout) -> int:
    """The child of ``run``: Ctrl-C and SIGTERM both stop it with a checkpoint saved."""
    import signal

    from .execute import run_row

    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    run_row(Path(args.suite_file), args.row, layout, args.resume)
    return 0


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v >= 0:  # (NaN too)
        raise argparse.ArgumentTypeError(f"{text!r}: a number of seconds >= 0 (0: never)")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m datadistill.bench", description=__doc__)
    p.add_argument("--bench-dir", default=None,
                   help="folder with suites/, results/, runs/, summaries/ (default: the checkout's bench/)")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="suites, their rows and whether each has a result")
    ls.set_defaults(func=cmd_list)
    r = sub.add_parser("run", help="run a suite into bench/results/<suite>.json")
    r.add_argument("suite", help="a suite name (bench/suites/<name>.toml) or a .toml path")
    r.add_argument("--resume", action="store_true",
                   help="skip rows already done; continue interrupted rows from their checkpoints")
    r.add_argument("--only", nargs="+", metavar="ROW", help="run only these rows (others kept)")
    r.add_argument("--progress-every", type=_seconds, default=300.0, metavar="SECONDS",
                   help="log what a running row is doing (distillation iteration, evaluation "
                        "model and epoch) every SECONDS when it changed (default 300; 0: never)")
    r.set_defaults(func=cmd_run)
    rep = sub.add_parser("report", help="regenerate BENCHMARKS.md from every results file")
    rep.add_argument("--out", default=None, help="default: BENCHMARKS.md beside bench/")
    rep.add_argument("--parity-dir", default=None, help="default: tests/fixtures/parity")
    rep.set_defaults(func=cmd_report)
    row = sub.add_parser("_row", help=argparse.SUPPRESS)  # the child process of `run`
    row.add_argument("suite_file")
    row.add_argument("row")
    row.add_argument("--resume", action="store_true")
    row.set_defaults(func=cmd_row)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    layout = Layout(Path(args.bench_dir).resolve() if args.bench_dir else default_bench_dir())
    # rows' ``from_summary`` folders are relative to it (here and in the rows' child processes)
    os.environ["DATADISTILL_BENCH_DIR"] = str(layout.root)
    try:
        return args.func(args, layout)
    except SuiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
