"""The words of the summary table, by fixed rules: a row's status against its published
figure (``status``) and its parity with the authors' code (``parity_word``)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from .cells import _num
from .stops import requested_iterations, stopped_early

STATUS_RULE = (
    "Status, by rule: **stopped early** when the method ended its run by its own rule (its "
    "reference's early stopping on a validation score, e.g. Distill-CF's patience) before the "
    "iterations it asked for: not a reduced run; the accuracy comparison follows when a figure "
    "is published. Otherwise **reduced run** when fewer iterations were asked for (or, without "
    "a stop, ran) than the published schedule; **reproduced** when the mean is at or above the "
    "published figure minus its published std, else **below published**; **no published "
    "figure** when none is quoted (a reduced run says so after its fraction of the schedule). "
    "The reason follows the word. Rows recorded before the runner kept the flag count as "
    "stopped early when they ran fewer iterations than they asked for (their `iterations`, "
    "else the method's default after their preset): the runner otherwise always runs what was "
    "asked.")

PARITY_RULE = (
    "Parity, by rule: **yes** when the row was made by library code that passes the method's "
    "parity fixture (tests/fixtures/parity, numbers computed by the authors' code); **before fix "
    "(commit)** when the row predates the fix that fixture led to (the method's defaults changed "
    "since: rerun the row); **—** without a fixture. Every accuracy row measured before commit "
    "12fd6cb also used the previous evaluation schedule (`epochs` passes, lr x0.1 at half keeping "
    "the momentum) instead of the field's (`epochs + 1` passes, a fresh optimizer at lr x0.1): "
    "the `evaluate` parity fixture.")


def status(row: dict[str, Any]) -> tuple[str, str]:
    """(word, why) by the rule in ``STATUS_RULE``."""
    pub = (row.get("published") or {}).get("accuracy")
    mean = (row.get("accuracy") or {}).get("mean")
    run, total = row.get("iterations_run"), row.get("iterations_published")
    stopped = stopped_early(row)
    asked = requested_iterations(row) if stopped else run  # (a stop is no reduction)
    if (pub is None or mean is None) and total and asked is not None and asked < total \
            and not stopped:  # a published schedule without a published figure
        return "reduced run", f"{_num(asked)} of {_num(total)} iterations; no published figure"
    if pub is None or mean is None:
        word, why = "no published figure", ""
    elif total and asked is not None and asked < total:
        word, why = "reduced run", f"{_num(asked)} of {_num(total)} iterations; " \
                                   f"{mean - pub:+.2f} points"
    else:
        tol = (row.get("published") or {}).get("std") or 0.0
        word, why = ("reproduced" if mean >= pub - tol else "below published"), \
            f"{mean - pub:+.2f} points"
    if not stopped:
        return word, why
    stop = f"by its own rule: {_num(run)} of {_num(asked)} iterations"
    if word == "reduced run":
        return word, f"{_num(asked)} of {_num(total)} iterations asked for, stopped early {stop}; " \
                     f"{mean - pub:+.2f} points"
    return "stopped early", f"{stop}; {word}" + (f", {why}" if why else "")


_SINCE = re.compile(r"since commit ([0-9a-f]{7,40})")


def parity_methods(parity_dir: Path | None) -> dict[str, str | None]:
    """Methods with a parity record (``tests/fixtures/parity/<method>[-...].md``) -> the commit
    from which the library passes it (its "Status ... since commit X" line), or None where it
    passed from the start."""
    if parity_dir is None or not parity_dir.is_dir():
        return {}
    out = {}
    for p in parity_dir.glob("*.md"):
        m = _SINCE.search(p.read_text())
        out[p.stem.lower().replace("_", "-")] = m.group(1) if m else None
    return out


def has_parity(method: str, parity) -> bool:
    m = method.lower()
    return any(s == m or s.startswith(m + "-") for s in parity)


def _is_ancestor(a: str, b: str) -> bool | None:
    """Whether commit ``a`` is an ancestor of (or equal to) ``b``; None when git cannot tell."""
    try:
        r = subprocess.run(["git", "merge-base", "--is-ancestor", a, b], capture_output=True,
                           cwd=Path(__file__).resolve().parent, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {0: True, 1: False}.get(r.returncode)


def parity_word(r: dict[str, Any], parity: dict[str, str | None]) -> str:
    """``yes`` when the row was made by code that passes the method's parity fixture, ``before
    fix`` when it predates the fix its fixture led to, ``—`` without a fixture."""
    m = r["method"].lower()
    keys = [k for k in parity if k == m or k.startswith(m + "-")]
    if not keys:
        return "—"
    since = [parity[k] for k in keys if parity[k]]
    commit = (r.get("env") or {}).get("commit") or (r.get("source") or {}).get("commit")
    if not since:
        return "yes"
    if not commit:
        return "unknown"
    ok = [_is_ancestor(c, commit) for c in since]
    if any(v is False for v in ok):
        return f"before fix ({', '.join(c[:7] for c, v in zip(since, ok) if v is False)})"
    return "yes" if all(ok) else "unknown"
