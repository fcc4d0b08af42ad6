"""What several commands share: ``--set`` values, the run options (how fast, never what), data
loading, progress bars and error lines."""
from __future__ import annotations

import json
import sys
import typing
from pathlib import Path
from typing import Any

EXIT_INTERRUPTED = 130


def parse_value(cls, key: str, text: str) -> Any:
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


def method_params(cls, sets: list[str]) -> dict[str, Any]:
    out = {}
    for item in sets or []:
        if "=" not in item:
            raise SystemExit(f"error: --set takes key=value, got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip().replace("-", "_")
        if k.startswith("synset.") and "synset_args" in cls.param_names():
            # --set synset.factor=3: one option of the summary kind (into synset_args)
            out.setdefault("synset_args", {})[k.split(".", 1)[1]] = option_value(v)
            continue
        if k not in cls.param_names():
            raise SystemExit(f"error: {cls.name} has no parameter {k!r}; its parameters: "
                             f"{', '.join(cls.param_names())}")
        val = parse_value(cls, k, v)
        if k == "synset_args" and isinstance(val, dict) and isinstance(out.get(k), dict):
            val = {**out[k], **val}  # with --set synset.<option>=...: later settings win
        out[k] = val
    return out


def option_value(text: str) -> Any:
    """A summary-kind option: JSON if it parses (numbers, booleans, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def err(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def load_data(dataset: str, data_dir, zca: bool = False):
    from ..data import load_dataset

    kw = {"zca": True} if zca else {}
    return load_dataset(dataset, data_dir=data_dir, **kw)


def summary_path(p: str) -> Path:
    p = Path(p)
    return p / "summary" if (p / "summary" / "summary.json").exists() else p


RUN_FLAGS = ("device", "precision", "threads", "compile", "fused", "channels_last", "chunk",
             "workers")


def add_common(sp, data=True):
    """``--seed``, ``--data-dir`` and the run options of a command that trains or distills."""
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


def run_options(args):
    """``RunOptions`` from the CLI's speed flags (how fast, never what)."""
    from ..runtime import RunOptions

    tri = {"auto": "auto", "on": True, "off": False}
    kw = {}
    for k in RUN_FLAGS:
        v = getattr(args, k, None)
        if v is None or v is False and k == "channels_last":
            continue
        kw[k] = tri[v] if k in ("compile", "fused") else v
    return RunOptions(**kw)


def describe_run(run) -> str:
    from .. import perf
    return perf.describe(run)


def progress_bar(total, desc: str, unit: str):
    """A progress bar on stderr that states elapsed time, the rate and the ETA."""
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                           "[elapsed {elapsed}, ETA {remaining}, {rate_fmt}{postfix}]")


def tensorboard(logdir, prefix: str):
    if not logdir:
        return None
    from ..report.progress import TensorBoardLog
    return TensorBoardLog(logdir, prefix)
