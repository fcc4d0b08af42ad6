"""``datadistill demo``: DM on the embedded digits data against a random subset, in one table."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ._common import add_common, run_options


def cmd_demo(args) -> int:
    """Distill digits with DM, evaluate against a random subset, write the picture, print a table."""
    from ..baselines import select_coreset
    from ..data import load_dataset
    from ..distillers import create_distiller
    from ..evaluation import evaluate
    from ..report import image_grid

    out = Path(args.out)
    real = load_dataset("digits")
    print(f"data: {real}", file=sys.stderr)
    run = run_options(args)
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


def add_demo(sub) -> None:
    dm = sub.add_parser("demo", help="distill the embedded digits data and compare with random")
    dm.add_argument("--out", default="runs/demo")
    dm.add_argument("--ipc", type=int, default=5)
    dm.add_argument("--iterations", type=int, default=300)
    dm.add_argument("--protocol", default="fast")
    dm.add_argument("--quiet", action="store_true")
    add_common(dm, data=False)
    dm.set_defaults(func=cmd_demo)
