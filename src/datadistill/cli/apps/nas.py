"""``datadistill app nas``: rank a space of ConvNets by training them on summaries and on the
full data (``apps/nas.py``, ``apps/nas_space.py``). Parses, calls the library, prints."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ...apps import _common as C
from ...apps import nas as N
from ...apps.nas_space import ACTS, DEPTHS, NORMS, POOLS, WIDTHS, sample_space, search_space
from ._args import add_run_arguments, plot_path, progress_printer, run_options


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="datadistill app nas",
        description="Rank a space of ConvNets by training them on summaries and on the full "
                    "data; report rank correlations, top-5 overlap and the search speed-up.")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--methods", default="dm,random",
                   help="summary makers (a method or random/herding/kcenter; method:ITERATIONS "
                        "sets its iterations), default %(default)s")
    p.add_argument("--ipcs", default="1,10", help="budgets, examples per class (%(default)s)")
    p.add_argument("--summary", action="append", default=[], metavar="PATH",
                   help="also rank with a saved summary (repeatable)")
    p.add_argument("--preset", default=None, help="preset of the distillation methods")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter of the distillation methods (repeatable)")
    g = p.add_argument_group("search space (DC-BENCH's 720 by default)")
    g.add_argument("--depths", default=",".join(map(str, DEPTHS)))
    g.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    g.add_argument("--norms", default=",".join(NORMS))
    g.add_argument("--acts", default=",".join(ACTS))
    g.add_argument("--pools", default=",".join(POOLS))
    g.add_argument("--archs", type=int, default=32,
                   help="a fixed random sample of this many (always with the field's ConvNet; "
                        "0 = the whole space), default %(default)s")
    g.add_argument("--arch", action="append", default=[], metavar="NAME",
                   help="exactly these architectures (convnet_d3_w128_in_relu_ap; repeatable)")
    p.add_argument("--protocol", default="fast", help="training on summaries (fast)")
    p.add_argument("--epochs", type=int, default=None, help="override the protocol's epochs")
    p.add_argument("--num-models", type=int, default=1, help="networks per architecture (1)")
    p.add_argument("--full-epochs", type=int, default=N.FULL_DEFAULTS["epochs"],
                   help="full-data epochs of the ground truth (%(default)s)")
    p.add_argument("--full-per-class", type=int, default=None,
                   help="ground truth on at most N training examples per class (stated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results (JSON) here")
    p.add_argument("--png", default=None, help="the plot (default: beside --out, or nas.png)")
    p.add_argument("--quiet", action="store_true")
    add_run_arguments(p)
    return p


def _words(text: str) -> list[str]:
    return [w.strip().lower() for w in text.split(",") if w.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    from ... import perf
    from ...data import load_dataset

    args = build_parser().parse_args(argv)
    log = progress_printer(args.quiet)
    run = run_options(args)
    if args.arch:
        archs = sorted({N.Arch.parse(n) for n in args.arch})
    else:
        space = search_space(C.int_list(args.depths, "--depths"), C.int_list(args.widths, "--widths"),
                             _words(args.norms), _words(args.acts), _words(args.pools))
        archs = sample_space(space, args.archs or None, seed=args.seed)
    methods = [C.parse_method(m) for m in _words(args.methods)]
    ipcs = C.int_list(args.ipcs, "--ipcs") if methods else []
    params = C.parse_sets(args.set)
    with perf.activate(run), C.Timer() as total:
        real = load_dataset(args.dataset, data_dir=args.data_dir)
        summaries, made = [], {}
        for path in args.summary:
            syn = C.load_summary(path, real)
            summaries.append((f"{syn.meta.get('method', 'summary')}@{syn.ipc:g} ({Path(path).name})",
                              syn))
        for name, iters in methods:
            for ipc in ipcs:
                label = f"{name}@{ipc}"
                log(f"making {label}" + (f" ({iters} iterations)" if iters else ""))
                with C.Timer() as t:
                    syn = C.summary_for(real, name, ipc, seed=args.seed, iterations=iters,
                                        preset=None if C.is_baseline(name) else args.preset,
                                        params=None if C.is_baseline(name) else params, run=run)
                made[label] = t.cpu
                summaries.append((label, syn))
        full_real = C.per_class_subset(real, args.full_per_class, seed=args.seed)
        res = N.run_nas(real, archs, summaries, full_real=full_real,
                        full_settings={"epochs": args.full_epochs, "seed": args.seed},
                        protocol=args.protocol, epochs=args.epochs, num_models=args.num_models,
                        seed=args.seed, run=run, log=log, make_cpu_s=made)
    st = res["settings"]
    print(f"NAS on {st['dataset']}: {st['num_archs']} ConvNets; proxy: validation accuracy after "
          f"{st['proxy']['epochs']} epochs ({st['proxy']['protocol']} protocol, "
          f"{st['proxy']['num_models']} model(s)); truth: test accuracy after "
          f"{st['full']['epochs']} epochs on {st['full']['train_examples']} full-data examples "
          f"({st['full']['cached']} of {st['num_archs']} cached)")
    print(N.results_table(res))
    png = plot_path(args, "nas.png")
    N.plot(res, png)
    print(f"plot: {png}")
    if args.out:
        rec = {"schema": "datadistill.apps/1", "app": "nas",
               "command": "datadistill app nas " + " ".join(sys.argv[1:] if argv is None else argv),
               "machine": C.environment(run.threads), "run": run.to_dict(),
               "cpu_s": round(total.cpu, 1), "wall_s": round(total.wall, 1),
               "units": {"accuracy": "%", "cpu_s": "CPU-seconds (user + system) of this process",
                         "speedup": "full-data training CPU time of all architectures / "
                                    "summary training CPU time"},
               **res, "plot": str(png)}
        print(f"results: {C.write_json(args.out, rec)}")
    return 0
