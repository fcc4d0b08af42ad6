"""The commands that make a summary: ``distill`` (a method) and ``baseline`` (a real subset)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import NonFiniteLossError
from ._common import (EXIT_INTERRUPTED, RUN_FLAGS, add_common, describe_run, err, load_data,
                      method_params, progress_bar, run_options, tensorboard)


def _eval_every(args, real, run):
    """``--eval-every N``: evaluate the current summary every N iterations (and at the last)
    under ``--eval-protocol``; the accuracy of each model goes into that iteration's log line."""
    every = getattr(args, "eval_every", None)
    if not every:
        return lambda syn, ev: None
    from ..evaluation import evaluate

    def now(syn, ev):
        if ev["iteration"] % every and ev["iteration"] != ev.get("iterations"):
            return
        rep = evaluate(syn, real, protocol=args.eval_protocol, seed=0, run=run)
        for i, (m, r) in enumerate(rep.results.items()):
            ev["accuracy" if i == 0 else f"accuracy_{m}"] = r["mean"]
        ev["eval_protocol"] = args.eval_protocol
    return now


def cmd_distill(args) -> int:
    """Also under ``torchrun --nproc-per-node N``: the process group comes from torchrun's
    environment (gloo on CPU, NCCL on CUDA; ``dist.py``), the real-data work is split across the
    ranks, and rank 0 alone writes files and prints."""
    from .. import dist

    group = dist.init_from_env(args.device)
    try:
        return _cmd_distill(args, dist.is_main())
    finally:
        dist.finalize(group)


def _cmd_distill(args, main: bool) -> int:
    from .. import dist
    from ..distillers import DISTILLERS
    from ..report import curve_png, image_grid

    out = Path(args.out)
    run_file = out / "run.json"
    if args.resume and run_file.exists():
        saved = json.loads(run_file.read_text())
        for k, v in saved.items():
            if k in RUN_FLAGS:  # speed options are the current invocation's, never the saved ones
                continue
            if getattr(args, k, None) in (None, [], False):
                setattr(args, k, v)
    if not args.method or not args.dataset:
        return err("distill needs --method and --dataset (or --resume on a run folder)")
    cls = DISTILLERS.get(args.method)
    params = method_params(cls, args.set)
    for flag in ("iterations", "seed"):
        v = getattr(args, flag)
        if v is not None:
            params[flag] = v
    distiller = cls.from_config(args.preset, **params)
    run = distiller.use_run(run_options(args))
    if main:
        world = f" x {dist.world_size()} processes" if dist.is_distributed() else ""
        print(f"[datadistill] {describe_run(run)}{world}", file=sys.stderr)
    real = load_data(args.dataset, args.data_dir, args.zca)
    budget = {k: getattr(args, k) for k in ("ipc", "ratio", "users") if getattr(args, k) is not None}
    syn = distiller.init_synset(real, **budget)
    syn.meta["dataset_source"] = args.dataset
    dist.barrier()  # every rank has read run.json (--resume) before rank 0 rewrites it
    if main:
        out.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps({k: getattr(args, k) for k in (
            "method", "dataset", "ipc", "ratio", "users", "preset", "set", "iterations", "seed",
            "data_dir", "zca")}, indent=2))
    from ..report.progress import MetricsLog
    log = MetricsLog(out / "log.jsonl", args.log_every) if main else None
    tb = tensorboard(args.tensorboard, "distill") if main else None
    history: list[tuple[float, float]] = []
    bar = None if args.quiet or not main else progress_bar(distiller.iterations, args.method, "it")
    evaluate_now = _eval_every(args, real, run) if main else (lambda syn, ev: None)

    def progress(ev):
        evaluate_now(syn, ev)
        if log is not None:
            log(ev)
        if tb is not None:
            tb(ev)
        if "loss" in ev:
            history.append((ev["iteration"], ev["loss"]))
        if bar is not None:
            if bar.n == 0 and ev["iteration"] > 1:
                bar.update(ev["iteration"] - 1)
            bar.set_postfix(loss=f"{ev.get('loss', float('nan')):.4g}")
            bar.update(1)

    try:
        distiller.distill(real, syn, [progress], workdir=out, resume=args.resume,
                          checkpoint_every_s=args.checkpoint_every, run=run)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the latest summary and a checkpoint are in {out}; "
              f"continue with: datadistill distill --out {out} --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    finally:
        if log is not None:
            log.close()
        if tb is not None:
            tb.close()
        if bar is not None:
            bar.close()
    if not main:
        return 0
    if real.info.modality == "image":
        image_grid(syn, out / "grid.png")
    if len(history) > 1:
        curve_png({args.method: history}, out / "loss.png", log_y=True)
    print(f"summary: {out / 'summary'} ({syn.num_examples} examples, {syn.stored_bytes()} bytes, "
          f"{syn.meta['wall_time_s']:.1f} s)")
    return 0


def cmd_baseline(args) -> int:
    from .. import perf
    from ..baselines import select_baseline
    from ..report import image_grid

    run = perf.resolve(run_options(args))
    with perf.activate(run):
        real = load_data(args.dataset, args.data_dir, args.zca)
        syn = select_baseline(real, args.coreset, ipc=args.ipc, ratio=args.ratio,
                              users=args.users, seed=args.seed,
                              model=None if args.model == "auto" else args.model,
                              device=run.device, **({"log": lambda m: print(m, file=sys.stderr)}
                                                    if real.info.modality == "image" else {}))
    syn.meta["dataset_source"] = args.dataset
    out = Path(args.out)
    syn.save(out / "summary")
    if real.info.modality == "image":
        image_grid(syn, out / "grid.png")
    print(f"summary: {out / 'summary'} ({args.coreset}, {syn.num_examples} examples)")
    return 0


def add_distill(sub) -> None:
    d = sub.add_parser("distill", help="distill a dataset into a summary")
    d.add_argument("--method", help="see `datadistill list methods`")
    d.add_argument("--dataset", help="registered name, or a path to an .npz / image folder")
    d.add_argument("--ipc", type=int, default=None, help="images (examples) per class")
    d.add_argument("--ratio", type=float, default=None, help="graph methods: fraction of nodes")
    d.add_argument("--users", type=int, default=None, help="recommender methods: synthetic users")
    d.add_argument("--iterations", type=int, default=None)
    d.add_argument("--preset", default=None, help="a named preset of the method")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any method parameter (repeatable)")
    d.add_argument("--zca", action="store_true", help="ZCA-whiten the data (stored with the summary)")
    d.add_argument("--out", required=True, help="run folder (summary, checkpoint, log, pictures)")
    d.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint in --out (with a larger --iterations: extend)")
    d.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.add_argument("--log-every", type=int, default=1, metavar="N",
                   help="write metrics to log.jsonl every N iterations (and the last; read by "
                        "`datadistill report`)")
    d.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="also write TensorBoard event files to DIR (needs tensorboard)")
    d.add_argument("--eval-every", type=int, default=None, metavar="N",
                   help="evaluate the summary every N iterations (its accuracy goes to log.jsonl)")
    d.add_argument("--eval-protocol", default="smoke",
                   help="protocol of --eval-every (default smoke: 20 epochs, 1 model)")
    add_common(d)
    d.set_defaults(func=cmd_distill)


def add_baseline(sub) -> None:
    b = sub.add_parser("baseline", help="a subset baseline (images, graphs, recommender users)")
    b.add_argument("--coreset", required=True,
                   help="random, herding, kcenter (recommender data: random, active, herding)")
    b.add_argument("--dataset", required=True)
    b.add_argument("--ipc", type=int, default=None, help="examples (graphs) per class")
    b.add_argument("--ratio", type=float, default=None, help="node graphs: fraction of all nodes")
    b.add_argument("--users", type=int, default=None, help="recommender data: real users to keep")
    b.add_argument("--model", default="auto",
                   help="feature network for herding/kcenter (default: convnet / gcn)")
    b.add_argument("--zca", action="store_true")
    b.add_argument("--out", required=True)
    add_common(b)
    b.set_defaults(func=cmd_baseline)
