"""``datadistill evaluate``: train fresh models on a summary, test them on the real data (with
the robust scores, KRR and a full-data reference on request)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ._common import (add_common, describe_run, load_data, progress_bar, run_options,
                      summary_path, tensorboard)


def cmd_evaluate(args) -> int:
    """Also under ``torchrun --nproc-per-node N``: the K models of each architecture are divided
    over the ranks (``evaluation.parallel``); rank 0 alone prints and writes."""
    from .. import dist

    group = dist.init_from_env(args.device)
    try:
        return _cmd_evaluate(args, dist.is_main())
    finally:
        dist.finalize(group)


def _cmd_evaluate(args, main: bool = True) -> int:
    from .. import perf
    from ..evaluation import evaluate
    from ..synsets import load_summary

    syn = load_summary(summary_path(args.summary))
    source = args.dataset or syn.meta.get("dataset_source") or syn.info.name
    real = load_data(source, args.data_dir)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    bar = None

    def note(ev):
        if bar is not None:
            bar.set_postfix_str(f"{ev.get('stage', 'summary')}: {ev['model']} "
                                f"#{ev['index'] + 1} {ev['accuracy']:.2f}%")
            bar.update(1)
    run = run_options(args)
    if not args.json and main:
        print(f"[datadistill] {describe_run(perf.resolve(run))}", file=sys.stderr)
    if not (args.json or args.quiet) and main:
        bar = progress_bar(_models_to_train(syn, models, args), "evaluate", "model")
    try:
        rep = evaluate(syn, real, models=models, protocol=args.protocol,
                       num_models=args.num_models, seed=args.seed,
                       full_reference=args.full_reference or False, on_model=note, run=run,
                       state_dir=args.state_dir)
        robust = None
        if args.robust:
            from ..evaluation.robust import robust_scores
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
        from ..evaluation.krr import evaluate_krr
        krr = evaluate_krr(syn, real, None if args.krr == "auto" else args.krr,
                           device=rep.run.get("device"))
    extra = {k: v for k, v in (("krr", krr), ("robust", robust)) if v is not None}
    text = rep.to_json() if not extra else json.dumps({**rep.to_dict(), **extra}, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    saved = _save_evaluation(args.summary, rep, text, robust is not None)
    tb = tensorboard(args.tensorboard, "evaluate")
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
    from ..evaluation import get_protocol
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


def add_evaluate(sub) -> None:
    e = sub.add_parser("evaluate", help="train fresh models on a summary, test on real data")
    e.add_argument("summary", help="a run folder or summary folder")
    e.add_argument("--models", default=None,
                   help="comma-separated, e.g. convnet,mlp (default: the modality's standard model)")
    e.add_argument("--protocol", default="fast",
                   help="paper, fast, smoke, paper-cutmix or idc (docs: evaluation protocols)")
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
    e.add_argument("--state-dir", default=None, metavar="DIR",
                   help="image summaries: keep each model's training state in DIR; after an "
                        "interruption the same command continues where it stopped (same results)")
    add_common(e)
    e.set_defaults(func=cmd_evaluate)
