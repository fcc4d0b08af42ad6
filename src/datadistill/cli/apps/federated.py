"""``datadistill app federated``: one-shot federated learning with data summaries against FedAvg
(``apps/federated.py``). Parses, calls the library, prints."""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from ...apps import _common as C
from ...apps import federated as F
from ._args import add_run_arguments, plot_path, progress_printer, run_options


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="datadistill app federated",
                                description="one-shot federated learning with data summaries "
                                            "against FedAvg")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--splits", default="iid,1.0,0.1",
                   help="comma-separated: iid and/or Dirichlet alphas (default iid,1.0,0.1)")
    p.add_argument("--method", default="dm", help="a method, or random / herding / kcenter")
    p.add_argument("--ipc", type=int, default=10, help="summary examples per class per client")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--preset", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--local-lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=64, help="FedAvg local batch size")
    p.add_argument("--model", default="convnet")
    p.add_argument("--protocol", default="fast", help="the server's training on the summaries")
    p.add_argument("--epochs", type=int, default=None,
                   help="override the server protocol's epochs (a stated reduction)")
    p.add_argument("--num-models", type=int, default=None)
    p.add_argument("--train-per-class", type=int, default=None,
                   help="use at most N training examples per class (a stated reduction)")
    p.add_argument("--fedavg-backend", choices=F.BACKENDS, default="auto",
                   help="flwr: Flower's FedAvg strategy in process (auto when installed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results JSON (benchmark schema)")
    p.add_argument("--png", default=None, help="the plot (default: beside --out)")
    p.add_argument("--quiet", action="store_true")
    add_run_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from ... import perf
    from ...data import load_dataset

    args = build_parser().parse_args(argv)
    log = progress_printer(args.quiet)
    run = run_options(args)
    with perf.activate(run), C.Timer() as total:
        real = C.per_class_subset(load_dataset(args.dataset, data_dir=args.data_dir),
                                  args.train_per_class, seed=args.seed)
        res = F.run_federated(real, splits=[s for s in args.splits.split(",") if s.strip()],
                              clients=args.clients, method=args.method, ipc=args.ipc,
                              iterations=args.iterations, preset=args.preset,
                              params=C.parse_sets(args.set), rounds=args.rounds,
                              local_epochs=args.local_epochs, local_lr=args.local_lr,
                              batch_size=args.batch_size, model=args.model,
                              protocol=args.protocol, epochs=args.epochs,
                              num_models=args.num_models, seed=args.seed,
                              backend=args.fedavg_backend, run=run, log=log)
    st = res["settings"]
    print(f"federated {st['dataset']} ({st['train_examples']} training examples): {st['clients']} "
          f"clients; one-shot {st['method']} IPC {st['ipc']} per client, server: {st['protocol']} "
          f"protocol; FedAvg ({st['backend']}): {st['rounds']} rounds x {st['local_epochs']} local "
          f"epoch(s), lr {st['local_lr']}, batch {st['batch_size']}; CPU {total.cpu:.0f} s")
    print(F.results_table(res))
    png = plot_path(args, "federated.png")
    print(f"plot: {F.plot(res, png)}")
    if args.out:
        rows = F.bench_rows(res)
        path = C.write_bench_results(
            args.out, suite=Path(args.out).stem, threads=run.threads,
            title=f"Federated learning: one-shot summaries vs FedAvg ({st['dataset']})",
            notes=f"`datadistill app federated`. {st['bytes']}. CPU total {total.cpu:.0f} s.",
            rows=rows)
        data = json.loads(path.read_text())
        data["app"] = {"settings": st, "splits": res["splits"], "cpu_s": total.cpu,
                       "wall_s": total.wall, "plot": str(png)}
        C.write_json(path, data)
        print(f"results: {path}")
    return 0
