"""``datadistill app privacy {distill,attack,epsilon}``: DP distillation (``apps/privacy.py``),
the accountant (``apps/accounting.py``) and membership inference (``apps/mia.py``). Parses,
calls the library, prints."""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from ...apps import _common as C
from ...apps import accounting, mia
from ...errors import ConfigError
from ._args import add_run_arguments, plot_path, progress_printer, run_options


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="datadistill app privacy",
                                description="DP distillation, privacy accounting and "
                                            "membership inference")
    sub = p.add_subparsers(dest="what", required=True)
    d = sub.add_parser("distill", help="a DP summary: dp-dm or dp-dc at (epsilon, delta)")
    d.add_argument("--method", default="dm", choices=("dm", "dc", "dp-dm", "dp-dc"))
    d.add_argument("--dataset", default="fashion-mnist")
    d.add_argument("--data-dir", default=None)
    d.add_argument("--ipc", type=int, default=10)
    d.add_argument("--epsilon", type=float, default=None, help="calibrate the noise for this")
    d.add_argument("--delta", type=float, default=1e-5)
    d.add_argument("--noise-multiplier", type=float, default=None,
                   help="fix the noise instead (the epsilon spent is reported)")
    d.add_argument("--clip", type=float, default=None)
    d.add_argument("--iterations", type=int, default=None)
    d.add_argument("--preset", default=None)
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", required=True, help="run folder (summary/ is written there)")
    d.add_argument("--evaluate", default="fast", help="protocol to evaluate with ('none': skip)")
    d.add_argument("--quiet", action="store_true")
    add_run_arguments(d)
    e = sub.add_parser("epsilon", help="the accountant: epsilon of (noise, rate, steps) or the "
                                       "noise for an epsilon")
    e.add_argument("--sample-rate", type=float, required=True)
    e.add_argument("--steps", type=int, required=True)
    e.add_argument("--delta", type=float, default=1e-5)
    g = e.add_mutually_exclusive_group(required=True)
    g.add_argument("--noise-multiplier", type=float)
    g.add_argument("--epsilon", type=float)
    add_attack_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.what == "epsilon":
        if args.epsilon is not None:
            s = accounting.noise_multiplier_for(args.epsilon, args.delta, args.sample_rate,
                                                args.steps)
            print(f"noise multiplier {s:.4f} for epsilon {args.epsilon:g}, delta {args.delta:g}, "
                  f"{args.steps} steps at rate {args.sample_rate:g} ("
                  f"{accounting.resolve_backend('auto')} RDP accountant)")
        else:
            eps = accounting.epsilon(args.noise_multiplier, args.sample_rate, args.steps,
                                     args.delta)
            print(f"epsilon {eps:.4f} at delta {args.delta:g}: noise multiplier "
                  f"{args.noise_multiplier:g}, {args.steps} steps at rate {args.sample_rate:g}")
        return 0
    if args.what == "attack":
        return main_attack(args)
    return _distill_main(args)


def _distill_main(args) -> int:
    from pathlib import Path

    from ... import perf
    from ...data import load_dataset
    from ...distillers import create_distiller
    from ...evaluation import evaluate

    method = args.method if args.method.startswith("dp-") else f"dp-{args.method}"
    params = C.parse_sets(args.set)
    if args.noise_multiplier is not None:
        if args.epsilon is not None:
            raise ConfigError("give --epsilon or --noise-multiplier, not both")
        params.update(noise_multiplier=args.noise_multiplier, epsilon=None)
    elif args.epsilon is not None:
        params["epsilon"] = args.epsilon
    params["delta"] = args.delta
    if args.clip is not None:
        params["clip"] = args.clip
    if args.iterations is not None:
        params["iterations"] = args.iterations
    params.setdefault("seed", args.seed)
    run = run_options(args)
    log = progress_printer(args.quiet)
    with perf.activate(run):
        real = load_dataset(args.dataset, data_dir=args.data_dir)
        d = create_distiller(method, args.preset, **params)
        syn = d.init_synset(real, ipc=args.ipc)
        every = max(1, d.iterations // 10)
        d.distill(real, syn, [lambda ev: ev["iteration"] % every == 0 and log(
            f"{method} {ev['iteration']}/{ev['iterations']}: loss {ev['loss']:.4g}")],
                  workdir=args.out, run=run)
        syn.save(Path(args.out) / "summary")
        priv = syn.meta["privacy"]
        print(f"{method} on {real.info.name}, IPC {args.ipc}: ({priv['epsilon']:.3f}, "
              f"{priv['delta']:g})-DP; noise multiplier {priv['noise_multiplier']:.4f}, clip "
              f"{priv['clip']:g}, sampling rate {priv['sample_rate']:.4g}, {priv['steps']} steps, "
              f"{priv['accountant']}")
        print(f"summary: {Path(args.out) / 'summary'}")
        if args.evaluate != "none":
            print(evaluate(syn, real, protocol=args.evaluate, seed=args.seed, run=run).table())
    (Path(args.out) / "privacy.json").write_text(json.dumps(priv, indent=2) + "\n")
    return 0


def add_attack_parser(sub) -> None:
    a = sub.add_parser("attack", help="membership inference: real data vs summary vs DP summary")
    a.add_argument("--dataset", default="fashion-mnist")
    a.add_argument("--data-dir", default=None)
    a.add_argument("--targets", default="real,random,dm,dp-dm",
                   help="real, a baseline (random, ...), a method (dm, dc, ...), dp-dm, dp-dc")
    a.add_argument("--ipc", type=int, default=10)
    a.add_argument("--members", type=int, default=None, help="default: a quarter of train")
    a.add_argument("--shadows", type=int, default=2)
    a.add_argument("--epsilon", type=float, default=10.0, help="for the dp-* targets")
    a.add_argument("--model", default="convnet")
    a.add_argument("--protocol", default="fast", help="training on the summaries")
    a.add_argument("--epochs", type=int, default=None, help="override the protocol's epochs")
    a.add_argument("--real-epochs", type=int, default=50)
    a.add_argument("--iterations", type=int, default=None)
    a.add_argument("--preset", default=None)
    a.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a.add_argument("--train-per-class", type=int, default=None,
                   help="use at most N training examples per class (a stated reduction)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", default=None, help="results JSON (benchmark schema)")
    a.add_argument("--png", default=None)
    a.add_argument("--quiet", action="store_true")
    add_run_arguments(a)


def main_attack(args) -> int:
    from pathlib import Path

    from ... import perf
    from ...data import load_dataset

    log = progress_printer(args.quiet)
    run = run_options(args)
    with perf.activate(run), C.Timer() as total:
        real = C.per_class_subset(load_dataset(args.dataset, data_dir=args.data_dir),
                                  args.train_per_class, seed=args.seed)
        res = mia.run_attack(real, targets=args.targets, ipc=args.ipc, members=args.members,
                             shadows=args.shadows, epsilon=args.epsilon, model=args.model,
                             protocol=args.protocol, epochs=args.epochs,
                             real_epochs=args.real_epochs, iterations=args.iterations,
                             preset=args.preset, params=C.parse_sets(args.set), seed=args.seed,
                             run=run, log=log)
    st = res["settings"]
    ep = "" if st["epochs"] is None else f", {st['epochs']} epochs"
    print(f"membership inference on {st['dataset']}: {st['members']} members / "
          f"{st['non_members']} non-members, {st['shadows']} shadow model(s) per target on a "
          f"pool of {st['shadow_pool']}; summaries IPC {st['ipc']} ({st['protocol']} protocol"
          f"{ep}); real: "
          f"{st['real_training']}; CPU {total.cpu:.0f} s")
    print(mia.results_table(res))
    png = plot_path(args, "privacy-mia.png")
    print(f"plot: {mia.plot(res, png)}")
    if args.out:
        path = C.write_bench_results(
            args.out, suite=Path(args.out).stem, threads=run.threads,
            title=f"Privacy: membership inference against real data, summaries and DP "
                  f"summaries ({st['dataset']})",
            notes=f"`datadistill app privacy attack`. The accuracy column is the target's "
                  f"utility; attack AUC / TPR at 1 % FPR are in the notes. CPU total "
                  f"{total.cpu:.0f} s.", rows=mia.bench_rows(res))
        data = json.loads(path.read_text())
        data["app"] = {"settings": st, "targets": res["targets"], "cpu_s": total.cpu,
                       "wall_s": total.wall, "plot": str(png)}
        C.write_json(path, data)
        print(f"results: {path}")
    return 0
