"""The ``datadistill`` command: parses, calls the library, prints. Nothing else lives here."""
from __future__ import annotations

import argparse
import json
import sys
import time
import typing
from pathlib import Path
from typing import Any

from .errors import NonFiniteLossError

EXIT_INTERRUPTED = 130


def _parse_value(cls, key: str, text: str) -> Any:
    hints = typing.get_type_hints(cls)
    t = hints.get(key)
    tname = getattr(t, "__name__", str(t))
    low = text.strip().lower()
    if low in ("none", "null") and "None" in str(t):
        return None
    try:
        if t is bool:
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if t is int:
            return int(text)
        if t is float:
            return float(text)
        if str(t).startswith(("dict", "list", "tuple", "typing.Dict", "typing.List")):
            return json.loads(text)  # (before the str test: dict[str, Any] mentions str)
        if t in (str, typing.Optional[str]) or "str" in str(t):
            return text
        return json.loads(text)
    except (ValueError, json.JSONDecodeError):
        raise SystemExit(f"error: --set {key}={text}: expected a value of type {tname}") from None


def _method_params(cls, sets: list[str]) -> dict[str, Any]:
    out = {}
    for item in sets or []:
        if "=" not in item:
            raise SystemExit(f"error: --set takes key=value, got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip().replace("-", "_")
        if k.startswith("synset.") and "synset_args" in cls.param_names():
            # --set synset.factor=3: one option of the summary kind (into synset_args)
            out.setdefault("synset_args", {})[k.split(".", 1)[1]] = _option_value(v)
            continue
        if k not in cls.param_names():
            raise SystemExit(f"error: {cls.name} has no parameter {k!r}; its parameters: "
                             f"{', '.join(cls.param_names())}")
        val = _parse_value(cls, k, v)
        if k == "synset_args" and isinstance(val, dict) and isinstance(out.get(k), dict):
            val = {**out[k], **val}  # with --set synset.<option>=...: later settings win
        out[k] = val
    return out


def _option_value(text: str) -> Any:
    """A summary-kind option: JSON if it parses (numbers, booleans, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _err(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


# -- commands -------------------------------------------------------------------------------------
def cmd_list(args) -> int:
    from .baselines import CORESETS
    from .data import DATASETS
    from .distillers import DISTILLERS
    from .evaluation import PROTOCOLS
    from .models import MODELS

    what = {"methods": DISTILLERS, "datasets": DATASETS, "models": MODELS, "coresets": CORESETS}
    kinds = [args.what] if args.what else list(what) + ["protocols"]
    for k in kinds:
        if k == "protocols":
            print("protocols: " + ", ".join(f"{n} ({p.epochs} epochs x {p.num_models} models)"
                                             for n, p in PROTOCOLS.items()))
            continue
        if k == "methods" and args.verbose:
            for n in DISTILLERS.names():
                cls = DISTILLERS.get(n)
                print(f"{n}: presets {sorted(cls.presets) or '-'}; parameters "
                      + ", ".join(f"{p}={getattr(cls(), p)!r}" for p in cls.param_names()))
            continue
        print(f"{k}: " + ", ".join(what[k].names()))
    return 0


def _load_data(dataset: str, data_dir, zca: bool = False):
    from .data import load_dataset

    kw = {"zca": True} if zca else {}
    return load_dataset(dataset, data_dir=data_dir, **kw)


RUN_FLAGS = ("device", "precision", "threads", "compile", "fused", "channels_last", "chunk",
             "workers")


def _run_options(args):
    """``RunOptions`` from the CLI's speed flags (how fast, never what)."""
    from .runtime import RunOptions

    tri = {"auto": "auto", "on": True, "off": False}
    kw = {}
    for k in RUN_FLAGS:
        v = getattr(args, k, None)
        if v is None or v is False and k == "channels_last":
            continue
        kw[k] = tri[v] if k in ("compile", "fused") else v
    return RunOptions(**kw)


def _describe_run(run) -> str:
    from . import perf
    return perf.describe(run)


def _progress_bar(total, desc: str, unit: str):
    """A progress bar on stderr that states elapsed time, the rate and the ETA."""
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                           "[elapsed {elapsed}, ETA {remaining}, {rate_fmt}{postfix}]")


def _tensorboard(logdir, prefix: str):
    if not logdir:
        return None
    from .report.progress import TensorBoardLog
    return TensorBoardLog(logdir, prefix)


def _eval_every(args, real, run):
    """``--eval-every N``: evaluate the current summary every N iterations (and at the last)
    under ``--eval-protocol``; the accuracy of each model goes into that iteration's log line."""
    every = getattr(args, "eval_every", None)
    if not every:
        return lambda syn, ev: None
    from .evaluation import evaluate

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
    from . import dist

    group = dist.init_from_env(args.device)
    try:
        return _cmd_distill(args, dist.is_main())
    finally:
        dist.finalize(group)


def _cmd_distill(args, main: bool) -> int:
    from . import dist
    from .distillers import DISTILLERS
    from .report import curve_png, image_grid

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
        return _err("distill needs --method and --dataset (or --resume on a run folder)")
    cls = DISTILLERS.get(args.method)
    params = _method_params(cls, args.set)
    for flag in ("iterations", "seed"):
        v = getattr(args, flag)
        if v is not None:
            params[flag] = v
    distiller = cls.from_config(args.preset, **params)
    run = distiller.use_run(_run_options(args))
    if main:
        world = f" x {dist.world_size()} processes" if dist.is_distributed() else ""
        print(f"[datadistill] {_describe_run(run)}{world}", file=sys.stderr)
    real = _load_data(args.dataset, args.data_dir, args.zca)
    budget = {k: getattr(args, k) for k in ("ipc", "ratio", "users") if getattr(args, k) is not None}
    syn = distiller.init_synset(real, **budget)
    syn.meta["dataset_source"] = args.dataset
    dist.barrier()  # every rank has read run.json (--resume) before rank 0 rewrites it
    if main:
        out.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps({k: getattr(args, k) for k in (
            "method", "dataset", "ipc", "ratio", "users", "preset", "set", "iterations", "seed",
            "data_dir", "zca")}, indent=2))
    from .report.progress import MetricsLog
    log = MetricsLog(out / "log.jsonl", args.log_every) if main else None
    tb = _tensorboard(args.tensorboard, "distill") if main else None
    history: list[tuple[float, float]] = []
    bar = None if args.quiet or not main else _progress_bar(distiller.iterations, args.method, "it")
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
    from . import perf
    from .baselines import select_baseline
    from .report import image_grid

    run = perf.resolve(_run_options(args))
    with perf.activate(run):
        real = _load_data(args.dataset, args.data_dir, args.zca)
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


def _summary_path(p: str) -> Path:
    p = Path(p)
    return p / "summary" if (p / "summary" / "summary.json").exists() else p


def cmd_evaluate(args) -> int:
    """Also under ``torchrun --nproc-per-node N``: the K models of each architecture are divided
    over the ranks (``evaluation.parallel``); rank 0 alone prints and writes."""
    from . import dist

    group = dist.init_from_env(args.device)
    try:
        return _cmd_evaluate(args, dist.is_main())
    finally:
        dist.finalize(group)


def _cmd_evaluate(args, main: bool = True) -> int:
    from . import perf
    from .evaluation import evaluate
    from .synsets import load_summary

    syn = load_summary(_summary_path(args.summary))
    source = args.dataset or syn.meta.get("dataset_source") or syn.info.name
    real = _load_data(source, args.data_dir)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    bar = None

    def note(ev):
        if bar is not None:
            bar.set_postfix_str(f"{ev.get('stage', 'summary')}: {ev['model']} "
                                f"#{ev['index'] + 1} {ev['accuracy']:.2f}%")
            bar.update(1)
    run = _run_options(args)
    if not args.json and main:
        print(f"[datadistill] {_describe_run(perf.resolve(run))}", file=sys.stderr)
    if not (args.json or args.quiet) and main:
        bar = _progress_bar(_models_to_train(syn, models, args), "evaluate", "model")
    try:
        rep = evaluate(syn, real, models=models, protocol=args.protocol,
                       num_models=args.num_models, seed=args.seed,
                       full_reference=args.full_reference or False, on_model=note, run=run)
        robust = None
        if args.robust:
            from .evaluation.robust import robust_scores
            robust = robust_scores(syn, real, models=list(rep.results), protocol=args.protocol,
                                   num_models=args.num_models, seed=args.seed,
                                   full_reference=args.robust_full, report=rep, on_model=note,
                                   run=run)
    finally:
        if bar is not None:
            bar.close()
    if not main:  # (the other ranks hold the same report: rank 0 reports it)
        return 0
    if args.num_models is not None:
        print(f"note: --num-models {args.num_models} overrides protocol {args.protocol!r}",
              file=sys.stderr)
    krr = None
    if args.krr:  # kernel methods: KRR with the summary's (or the named) kernel, reported beside
        from .evaluation.krr import evaluate_krr
        krr = evaluate_krr(syn, real, None if args.krr == "auto" else args.krr,
                           device=rep.run.get("device"))
    extra = {k: v for k, v in (("krr", krr), ("robust", robust)) if v is not None}
    text = rep.to_json() if not extra else json.dumps({**rep.to_dict(), **extra}, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    saved = _save_evaluation(args.summary, rep, text, robust is not None)
    tb = _tensorboard(args.tensorboard, "evaluate")
    if tb is not None:
        step = int(syn.meta.get("iterations") or 0)
        for m, r in rep.results.items():
            tb({"iteration": step, f"{m}/accuracy": r["mean"], **(
                {f"{m}/lrs": robust["models"][m]["lrs"]["mean"],
                 f"{m}/ars": robust["models"][m]["ars"]["mean"]} if robust else {})})
        tb.close()
    print(text if args.json else rep.table())
    if robust is not None and not args.json:
        print(_robust_table(robust))
    if saved is not None and not args.json:
        print(f"saved: {saved} (read by `datadistill report`)", file=sys.stderr)
    if krr is not None and not args.json:
        print(f"KRR ({krr['kernel']}, reg {krr['reg']:g}, {krr['num_support']} support): "
              f"{krr['accuracy']:.2f}% on {krr['num_test']} test examples")
    return 0


def _models_to_train(syn, models, args) -> int | None:
    """How many fresh models ``evaluate`` (and ``--robust``) will train, for the progress bar."""
    from .evaluation import get_protocol
    if syn.info.modality != "image":
        return None
    k = args.num_models or get_protocol(args.protocol).num_models
    n = len(models or ("convnet",)) * k
    if args.robust:  # no-aug summary, random subsets with and without aug (+ hard labels)
        n *= 4 + (syn.label_format != "hard")
    return n


def _save_evaluation(summary_arg: str, rep, text: str, robust: bool) -> Path | None:
    """A run folder keeps its evaluations in ``evaluations/<protocol>-<models>[-robust].json``."""
    folder = Path(summary_arg)
    if not (folder / "summary").is_dir():
        return None
    name = f"{rep.protocol.get('name', 'eval')}-{'+'.join(rep.results)}" + ("-robust" if robust else "")
    path = folder / "evaluations" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def _robust_table(robust) -> str:
    lines = [f"robust scores (DD-Ranking; {robust['rounds']} rounds; full-data accuracy: "
             f"{robust['full_reference'].get('description')}; random subsets of "
             f"{robust['random']['ipc']} per class)",
             f"{'model':<12}{'HLR pp':>14}{'IOR pp':>14}{'LRS %':>14}{'ARS %':>14}"]
    for m, s in robust["models"].items():
        cell = lambda k: f"{s[k]['mean']:.2f} ± {s[k]['std']:.2f}"  # noqa: E731
        lines.append(f"{m:<12}{cell('hlr'):>14}{cell('ior'):>14}{cell('lrs'):>14}{cell('ars'):>14}")
    return "\n".join(lines)


def cmd_report(args) -> int:
    from .report import write_report

    out = write_report(args.runs, args.out, title=args.title, load_real=not args.no_real)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, self-contained)")
    return 0


def cmd_compare(args) -> int:
    from .report.compare import compare

    table, _ = compare(args.runs, by=args.by, png=args.png)
    print(table)
    if args.png:
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


def cmd_show(args) -> int:
    from .report import image_grid
    from .synsets import load_summary

    syn = load_summary(_summary_path(args.summary))
    m = syn.meta
    print(f"{syn.kind} summary of {syn.info.name}: {syn.num_examples} examples "
          f"({syn.ipc:g} per class), labels {syn.label_format}, {syn.stored_bytes()} stored bytes"
          f" ({syn.storage.name})")
    print(f"method: {m.get('method')}  iterations: {m.get('iterations')}  seed: {m.get('seed')}  "
          f"wall time: {m.get('wall_time_s')} s  library {m.get('library_version')}")
    if syn.lr is not None:
        print(f"learned step size: {float(syn.lr):.6g}")
    if m.get("params"):
        print("params: " + ", ".join(f"{k}={v}" for k, v in m["params"].items()))
    if syn.info.modality == "text":  # nearest tokens / nearest real sentences
        from .synsets.text import describe_text
        real = _load_data(m.get("dataset_source") or syn.info.name, args.data_dir)
        print("\n".join(describe_text(syn, real, per_class=args.rows)))
    if syn.info.modality == "tabular":  # valid rows in the original columns and types
        from .synsets.tabular import decode_rows, write_csv
        rows = decode_rows(syn)
        for r in rows[:args.rows * syn.info.num_classes]:
            print("  " + ", ".join(f"{k}={v}" for k, v in r.items()))
        if args.csv:
            print(f"wrote {write_csv(syn, args.csv)}")
    if args.png:
        print(f"wrote {image_grid(syn, args.png)}")
    if args.npz:
        import numpy as np
        x, y = syn.materialize()
        np.savez(args.npz, x=x.detach().cpu().numpy(), y=y.detach().cpu().numpy(),
                 mean=np.asarray(syn.info.mean), std=np.asarray(syn.info.std))
        print(f"wrote {args.npz}")
    return 0


def cmd_demo(args) -> int:
    """Distill digits with DM, evaluate against a random subset, write the picture, print a table."""
    from .baselines import select_coreset
    from .data import load_dataset
    from .distillers import create_distiller
    from .evaluation import evaluate
    from .report import image_grid

    out = Path(args.out)
    real = load_dataset("digits")
    print(f"data: {real}", file=sys.stderr)
    run = _run_options(args)
    d = create_distiller("dm", iterations=args.iterations, seed=args.seed)
    syn = d.init_synset(real, ipc=args.ipc)
    t0 = time.perf_counter()
    from tqdm import tqdm
    with tqdm(total=d.iterations, desc="dm", file=sys.stderr, disable=args.quiet) as bar:
        d.distill(real, syn, [lambda e: (bar.set_postfix(loss=f"{e['loss']:.3g}"), bar.update(1))],
                  workdir=out / "dm", run=run)
    t_dm = time.perf_counter() - t0
    rnd = select_coreset(real, args.ipc, "random", seed=args.seed)
    rnd.save(out / "random" / "summary")
    grid = image_grid(syn, out / "dm" / "grid.png")
    rows = []
    for name, s in (("random", rnd), ("dm", syn)):
        rep = evaluate(s, real, models=("convnet", "mlp"), protocol=args.protocol, seed=args.seed,
                       run=run)
        rows.append((name, rep))
    print(f"\ndigits, {args.ipc} images per class, protocol {args.protocol!r} "
          f"({rows[0][1].protocol['epochs']} epochs x {rows[0][1].protocol['num_models']} models); "
          f"DM: {args.iterations} iterations in {t_dm:.0f} s")
    print(f"{'summary':<10}{'convnet %':>18}{'mlp %':>18}{'stored bytes':>14}")
    for name, rep in rows:
        c, m = rep.results["convnet"], rep.results["mlp"]
        print(f"{name:<10}{c['mean']:>11.2f} ± {c['std']:<4.2f}{m['mean']:>11.2f} ± {m['std']:<4.2f}"
              f"{rep.summary['stored_bytes']:>14}")
    print(f"picture of the DM summary: {grid}")
    return 0


def app_names() -> list[str]:
    """The applications in ``datadistill.apps``: the modules that define ``main(argv)`` (found
    in their source, nothing imported; helpers such as ``_common`` or ``nas_space`` have none)."""
    import pkgutil

    from . import apps
    found = []
    for m in pkgutil.iter_modules(apps.__path__):
        src = Path(apps.__path__[0]) / f"{m.name}.py"
        if not m.name.startswith("_") and src.is_file() and "\ndef main(" in src.read_text():
            found.append(m.name)
    return sorted(found)


def cmd_app(args) -> int:
    """``datadistill app NAME ...``: imports ``datadistill.apps.NAME`` and hands it the rest of
    the command line (its ``main(argv)`` parses it: ``datadistill app NAME --help``)."""
    import importlib

    known = app_names()
    if args.app not in known:
        return _err(f"unknown application {args.app!r}; known: {', '.join(known)}")
    return importlib.import_module(f"datadistill.apps.{args.app}").main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="datadistill", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, data=True):
        sp.add_argument("--seed", type=int, default=None if sp.prog.endswith("distill") else 0)
        if data:
            sp.add_argument("--data-dir", default=None, help="folder holding the dataset files")
        g = sp.add_argument_group("run options (how fast, never what: recorded, never a resume "
                                  "conflict; default auto = the fastest same-function path)")
        g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA if present)")
        g.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                       help="bf16 autocast (changes numerics; never automatic)")
        g.add_argument("--threads", type=int, default=None, help="intra-op threads")
        g.add_argument("--compile", choices=("auto", "on", "off"), default=None,
                       help="torch.compile where the method supports it")
        g.add_argument("--fused", choices=("auto", "on", "off"), default=None,
                       help="fused CPU kernels for the ConvNet (built once with the C++ compiler)")
        g.add_argument("--channels-last", action="store_true", help="channels-last activations")
        g.add_argument("--chunk", type=int, default=None,
                       help="examples per no-grad forward / kernel block (memory; exact)")
        g.add_argument("--workers", type=int, default=None,
                       help="processes for parallel work (expert trajectories, evaluation models)")

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
    common(d)
    d.set_defaults(func=cmd_distill)

    e = sub.add_parser("evaluate", help="train fresh models on a summary, test on real data")
    e.add_argument("summary", help="a run folder or summary folder")
    e.add_argument("--models", default=None,
                   help="comma-separated, e.g. convnet,mlp (default: the modality's standard model)")
    e.add_argument("--protocol", default="fast", help="paper, fast or smoke")
    e.add_argument("--num-models", type=int, default=None, help="override the protocol's count")
    e.add_argument("--dataset", default=None, help="override the dataset (name or path)")
    e.add_argument("--full-reference", nargs="?", const="converged", default=None,
                   choices=("converged", "converged-dsa", "quick"), metavar="PRESET",
                   help="also report %% of a cached full-data model's accuracy: converged (the "
                        "field's 300-epoch reference, the default; hours of CPU the first time), "
                        "converged-dsa, or quick (20 epochs: not converged, flatters the %%)")
    e.add_argument("--json", action="store_true", help="JSON results on stdout")
    e.add_argument("--krr", nargs="?", const="auto", default=None, metavar="KERNEL",
                   help="also evaluate by kernel ridge regression (default kernel: the summary's "
                        "own, e.g. KIP's; or fc_ntk, conv_ntk, conv_nngp, ...)")
    e.add_argument("--out", default=None, help="also write the JSON results here (a run "
                   "folder also keeps them in evaluations/, where `datadistill report` reads them)")
    e.add_argument("--robust", action="store_true",
                   help="also DD-Ranking's label- and augmentation-robust scores (LRS, ARS): "
                        "random real subsets and evaluation without augmentation, ~4x the models")
    e.add_argument("--robust-full", default="auto", metavar="REFERENCE",
                   help="full-data accuracy for --robust: auto (published if known, else "
                        "converged), published, converged, converged-dsa, quick")
    e.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="also write the accuracies as TensorBoard scalars to DIR")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    common(e)
    e.set_defaults(func=cmd_evaluate)

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
    common(b)
    b.set_defaults(func=cmd_baseline)

    r = sub.add_parser("report", help="one self-contained HTML report of run folders")
    r.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or summary folders)")
    r.add_argument("--out", required=True, help="the HTML file to write")
    r.add_argument("--title", default=None)
    r.add_argument("--no-real", action="store_true",
                   help="do not load the real data (graph / recommender drawings compare with it)")
    r.set_defaults(func=cmd_report)

    c = sub.add_parser("compare", help="accuracy against examples per class and stored bytes",
                       description="Each RUN (run or summary folder) needs its saved evaluations "
                                   "(`datadistill evaluate RUN` writes RUN/evaluations/*.json); "
                                   "every point is labelled with its protocol.")
    c.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or summary folders)")
    c.add_argument("--by", choices=("examples", "bytes"), default="examples",
                   help="sort the table by examples per class or by stored bytes")
    c.add_argument("--png", default=None, metavar="FILE",
                   help="also plot accuracy vs examples per class and vs stored bytes")
    c.set_defaults(func=cmd_compare)

    s = sub.add_parser("show", help="describe a summary; export a PNG grid or .npz")
    s.add_argument("summary")
    s.add_argument("--png", default=None)
    s.add_argument("--npz", default=None)
    s.add_argument("--csv", default=None, help="tabular summaries: write the decoded rows here")
    s.add_argument("--rows", type=int, default=3, help="text/tabular: examples shown per class")
    s.add_argument("--data-dir", default=None, help="text summaries: where the dataset is")
    s.set_defaults(func=cmd_show)

    # -- compact: a sparse, quantized copy of a recommender or graph summary (datadistill.compact)
    def cmd_compact(args) -> int:
        from .compact import bytes_breakdown, compact
        from .synsets import load_summary

        syn = load_summary(_summary_path(args.summary))
        out = compact(syn, topk=args.topk, dtype=args.dtype, threshold=args.threshold,
                      edge_dtype=args.edge_dtype)
        path = out.save(Path(args.out) / "summary")
        before, after = syn.stored_bytes(), out.stored_bytes()
        if args.json:
            print(json.dumps({"summary": str(path), "kind": out.kind, "storage": out.config(),
                              "stored_bytes_before": before, "stored_bytes": after,
                              "bytes": bytes_breakdown(out)}))
        else:
            parts = ", ".join(f"{k} {v:,}" for k, v in bytes_breakdown(out).items() if k != "total")
            print(f"summary: {path} ({out.kind}, {after:,} stored bytes, was {before:,} as "
                  f"{syn.kind}: {after / max(before, 1):.3f}x)\n  {parts}")
        return 0

    cp = sub.add_parser("compact", help="store a recommender or graph summary sparsely, quantized")
    cp.add_argument("summary", help="a run folder or summary folder")
    cp.add_argument("--out", required=True, help="folder for the compact summary (OUT/summary)")
    cp.add_argument("--topk", type=int, default=None,
                    help="recommender rows: keep each user's K largest entries (default: all non-zeros)")
    cp.add_argument("--dtype", default=None, help="values (rows) or features (graphs): float32, "
                    "float16 (default), uint8 (affine per row), binary (rows only: kept entries = 1)")
    cp.add_argument("--threshold", type=float, default=None,
                    help="graphs: drop adjacency entries below this (default: the summary's own)")
    cp.add_argument("--edge-dtype", default="float16",
                    help="graphs: edge weights as float32, float16, uint8 or binary")
    cp.add_argument("--json", action="store_true", help="JSON on stdout")
    cp.set_defaults(func=cmd_compact)

    ls = sub.add_parser("list", help="list methods, datasets, models, coresets, protocols")
    ls.add_argument("what", nargs="?", choices=("methods", "datasets", "models", "coresets", "protocols"))
    ls.add_argument("-v", "--verbose", action="store_true", help="methods: parameters and presets")
    ls.set_defaults(func=cmd_list)

    dm = sub.add_parser("demo", help="distill the embedded digits data and compare with random")
    dm.add_argument("--out", default="runs/demo")
    dm.add_argument("--ipc", type=int, default=5)
    dm.add_argument("--iterations", type=int, default=300)
    dm.add_argument("--protocol", default="fast")
    dm.add_argument("--quiet", action="store_true")
    common(dm, data=False)
    dm.set_defaults(func=cmd_demo)
    ap = sub.add_parser("app", help="applications of summaries (continual learning, NAS, ...)",
                        description="datadistill app NAME [options]; NAME --help lists its options")
    ap.add_argument("app", metavar="NAME", help="one of: " + ", ".join(app_names()))
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="the application's own options")
    ap.set_defaults(func=cmd_app)
    return p


def main(argv: list[str] | None = None) -> int:
    from .errors import DatadistillError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatadistillError, FileNotFoundError) as e:
        return _err(str(e))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
