"""``datadistill app continual``: class-incremental learning with memories of real exemplars or
summaries (``apps/continual.py``). Parses, calls the library, prints."""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from ...apps import _common as C
from ...apps import continual as CL
from ._args import add_run_arguments, plot_path, progress_printer, run_options


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="datadistill app continual",
        description="Class-incremental learning with memories of real exemplars or distilled "
                    "summaries: replay beside new data, or compress then recall (retrain from "
                    "scratch on all memories after each task). Prints a table, writes a plot.")
    p.add_argument("--dataset", default="digits", help="registered name or path (default digits)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--strategies", default=",".join(CL.DEFAULT_STRATEGIES),
                   help="comma-separated: finetune, replay-X, recall-X with X random, herding, "
                        "kcenter, a method name or summary ({method} = --method); default "
                        "%(default)s")
    p.add_argument("--method", default="dm", help="the distillation method of {method} (dm)")
    p.add_argument("--ipc", type=int, default=10, help="memory: examples per class (10)")
    p.add_argument("--classes-per-task", type=int, default=2)
    p.add_argument("--class-order", default=None, help="comma-separated class order")
    p.add_argument("--iterations", type=int, default=None, help="distillation iterations")
    p.add_argument("--preset", default=None, help="the method's preset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a method parameter (repeatable)")
    p.add_argument("--summary", default=None, help="a saved summary of all classes (X=summary)")
    p.add_argument("--model", default="convnet")
    p.add_argument("--epochs", type=int, default=5, help="epochs per task, incremental (5)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--recall-protocol", default="fast", help="recall training (fast)")
    p.add_argument("--recall-epochs", type=int, default=None, help="override its epochs")
    p.add_argument("--feature-epochs", type=int, default=20,
                   help="herding/k-center feature network epochs on each task's data (20)")
    p.add_argument("--train-per-class", type=int, default=None,
                   help="use at most N training examples per class (a stated reduction)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (0)")
    p.add_argument("--out", default=None, help="write the results (JSON) here")
    p.add_argument("--png", default=None, help="the plot (default: beside --out, or "
                                                "continual.png)")
    p.add_argument("--quiet", action="store_true")
    add_run_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from ... import perf
    from ...data import load_dataset

    args = build_parser().parse_args(argv)
    log = progress_printer(args.quiet)
    run = run_options(args)
    strategies = CL.parse_strategies(args.strategies, args.method)
    order = C.int_list(args.class_order, "--class-order") if args.class_order else None
    seeds = C.int_list(args.seeds, "--seeds")
    with perf.activate(run), C.Timer() as total:
        real = load_dataset(args.dataset, data_dir=args.data_dir)
        real = C.per_class_subset(real, args.train_per_class, seed=0)
        summary = C.load_summary(args.summary, real) if args.summary else None
        res = CL.run_continual(real, strategies=strategies, ipc=args.ipc,
                               classes_per_task=args.classes_per_task, class_order=order,
                               model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                               lr=args.lr, recall_protocol=args.recall_protocol,
                               recall_epochs=args.recall_epochs, iterations=args.iterations,
                               preset=args.preset, params=C.parse_sets(args.set),
                               summary=summary, feature_epochs=args.feature_epochs, seeds=seeds,
                               run=run, log=log)
    st = res["settings"]
    print(f"class-incremental {st['dataset']}: tasks {st['tasks']}, memory {args.ipc} per class, "
          f"{st['train_examples']} training examples; incremental: {args.epochs} epochs/task, "
          f"lr {args.lr}; recall: {st['recall']['protocol']} protocol, "
          f"{st['recall']['epochs']} epochs; seeds {seeds}")
    print(CL.results_table(res))
    png = plot_path(args, "continual.png")
    CL.plot(res, png)
    print(f"plot: {png}")
    if args.out:
        rec = {"schema": "datadistill.apps/1", "app": "continual",
               "command": "datadistill app continual " + " ".join(
                   sys.argv[1:] if argv is None else argv),
               "machine": C.environment(run.threads), "run": run.to_dict(),
               "cpu_s": round(total.cpu, 1), "wall_s": round(total.wall, 1),
               "units": {"accuracy": "% on the real test split of the seen tasks",
                         "cpu_s": "CPU-seconds (user + system) of this process"},
               **res, "plot": str(png)}
        print(f"results: {C.write_json(args.out, rec)}")
    if any(math.isnan(r["final_avg_acc"]) for r in res["results"].values()):
        return 1
    return 0
