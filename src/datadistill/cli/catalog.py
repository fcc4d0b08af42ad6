"""``datadistill list``: what is registered (methods, datasets, models, coresets, protocols)."""
from __future__ import annotations


def cmd_list(args) -> int:
    from ..baselines import CORESETS
    from ..data import DATASETS
    from ..distillers import DISTILLERS
    from ..evaluation import PROTOCOLS
    from ..models import MODELS

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


def add_list(sub) -> None:
    ls = sub.add_parser("list", help="list methods, datasets, models, coresets, protocols")
    ls.add_argument("what", nargs="?", choices=("methods", "datasets", "models", "coresets", "protocols"))
    ls.add_argument("-v", "--verbose", action="store_true", help="methods: parameters and presets")
    ls.set_defaults(func=cmd_list)
