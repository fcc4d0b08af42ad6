"""What the applications' command lines share: progress lines on stderr, the run options (how
fast, never what) and where a plot goes."""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from ...runtime import RunOptions


def progress_printer(quiet: bool) -> Callable[[str], None]:
    """A logger for a command line: lines on stderr, or nothing with ``quiet``."""
    if quiet:
        return lambda msg: None
    return lambda msg: print(msg, file=sys.stderr, flush=True)


def add_run_arguments(p) -> None:
    """The run options of a command line (how fast, never what), as ``datadistill distill``'s."""
    g = p.add_argument_group("run options (how fast, never what; default auto)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA if present)")
    g.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                   help="bf16 autocast (changes numerics; never automatic)")
    g.add_argument("--threads", type=int, default=None, help="intra-op threads")
    g.add_argument("--compile", choices=("auto", "on", "off"), default=None)
    g.add_argument("--fused", choices=("auto", "on", "off"), default=None,
                   help="fused CPU kernels for the ConvNet")


def run_options(args) -> RunOptions:
    """Resolved ``RunOptions`` from ``add_run_arguments``' flags (``datadistill``'s own parsing of
    the same flags, resolved to the machine)."""
    from ... import perf
    from .._common import run_options as parse
    return perf.resolve(parse(args))


def plot_path(args, default: str) -> Path:
    """Where an app's picture goes: ``--png``, else beside ``--out``, else ``default``
    (its folder created)."""
    png = Path(args.png) if args.png else (Path(args.out).with_suffix(".png") if args.out
                                           else Path(default))
    png.parent.mkdir(parents=True, exist_ok=True)
    return png
