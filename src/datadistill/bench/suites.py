"""Suites declared as data: ``bench/suites/<name>.toml`` read with ``tomllib`` and checked.

A suite file holds a title, ``notes`` (prose the report prints under the suite's heading),
``[defaults]`` applied to every row, and ``[[rows]]``. A row names a ``method`` (a registered
distiller or a baseline: ``random``, ``herding``, ``kcenter``, recommender ``active``), a
``dataset``, a budget (``ipc``, graph ``ratio`` or recommender ``users``), optional ``preset``
and ``set`` (method parameters), ``iterations``, the evaluation ``protocol`` / ``num_models``
/ ``models`` / ``seeds``, ``run`` (the run options, ``datadistill.runtime.RunOptions`` as a
table: threads, precision, fused, compile, chunk, allocator, ...; kept apart from the method
parameters, as in the library) and ``published = {accuracy, std, source, iterations}``.
``robust = true`` (or a table ``{full, lrs_weight, ars_weight}``: the full-data reference,
``auto`` / ``published`` / a reference preset, and DD-Ranking's weights) makes an accuracy row's
evaluation also compute DD-Ranking's label- and augmentation-robust scores
(``datadistill.evaluation.robust.robust_scores``, as ``datadistill evaluate --robust``).
``curve = [k1, k2, ...]`` (iterations below the row's ``iterations``) evaluates snapshots of
the same distillation at those iterations too: an accuracy-vs-CPU-time curve from one run, each
point with the distillation CPU-seconds spent up to it (evaluation excluded).
``from_summary = "<suite>/<row>"`` evaluates the summary another row made (seed 0; or
``"<suite>/<row>/s<seed>"``) instead of distilling one: the same summary under another protocol
(the row's ``method`` names what made it; nothing is distilled or timed). The summary is read
from ``bench/summaries`` when it was kept there, else from that row's run folder, and must have
the sha256 that row's results record.
``compact = {topk, dtype, threshold, edge_dtype}`` converts the row's summary (its own, or the
one ``from_summary`` names) with ``datadistill.compact.compact`` before it is evaluated and its
bytes counted: recommender rows keep the top-k entries per fake user at a precision, graph rows
store features / edge weights compactly above a threshold, an IT-GAN summary becomes its
generated images (the conversion a user runs as ``datadistill compact RUN ...``).
``byte_budget = <bytes>`` declares that the row is compared with the other rows of its dataset
at that number of stored bytes (the report's fixed-bytes table; a row storing more is flagged).
``kind = "speed"`` rows time ``timed`` iterations after ``warmup`` ones (``vs`` names the row to
compare with); ``repeats = n`` runs a speed row n times, the suite's repeated rows alternating
round by round (old, new, old, new ...), and reports the spread. A speed row may time another
version of the library (``commit = "<git commit>"``, its speed settings then in ``set`` /
``preset`` as that version had them) or another program (``external = "<command>"``, e.g.
``"python $DRIVER"``; see ``external.time_external``). Unknown keys, methods and datasets are
errors that name them.

A suite may declare ``figure = {x = "ipc" | "bytes" | "cpu", title = "...", also =
["<suite>/<row>"], limit = {x = <number>, label = "..."}}`` (``also``: rows of other suites drawn
in it too; ``limit``: a vertical line marking a budget on the x axis): the report then draws
``bench/results/<suite>.png`` from its results file (accuracy against examples per class, stored
bytes or distillation CPU-seconds; one line per method and storage, or with ``x = "cpu"`` one line
per row, its ``curve`` points; ``report/figure.py``) and shows it in the suite's section. A row's
``series = "<name>"`` draws it in the line of that name instead of its method's (rows of one
method whose ``ipc`` means different things, e.g. KFS at fixed bytes and at fixed examples).
"""
from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

ROW_KEYS = {
    "id", "kind", "method", "label", "dataset", "data_dir", "ipc", "ratio", "users", "preset",
    "set", "iterations", "protocol", "num_models", "models", "seeds", "run", "published",
    "summary", "notes", "timed", "warmup", "vs", "repeats", "commit", "external", "robust",
    "byte_budget", "curve", "from_summary", "compact", "series",
}
#: ``robust = {...}``: the arguments of ``robust_scores`` a row may set (defaults: the library's)
ROBUST_KEYS = {"full", "lrs_weight", "ars_weight"}
PUBLISHED_KEYS = {"accuracy", "std", "source", "iterations", "protocol", "note"}
#: the fields of ``datadistill.runtime.RunOptions`` (this module never imports the library)
RUN_KEYS = {"device", "precision", "threads", "compile", "fused", "channels_last", "chunk",
            "workers", "allocator", "release_memory", "fast_norm"}
SUITE_KEYS = {"title", "notes", "defaults", "rows", "figure"}
#: ``figure = {x, title, also, limit}``: what the suite's figure plots against (``x``), its title,
#: rows of other suites it draws too (``also = ["<suite>/<row>", ...]``) and a budget marked on
#: the x axis (``limit = {x = <number>, label = "..."}``)
FIGURE_KEYS = {"x", "title", "also", "limit"}
#: ``compact = {...}``: the arguments of ``datadistill.compact.compact`` a row may set
COMPACT_KEYS = {"topk", "dtype", "threshold", "edge_dtype"}
FIGURE_X = ("ipc", "bytes", "cpu")
KINDS = ("accuracy", "speed")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: "<suite>/<row>" (``from_summary`` also takes "/s<seed>" after it)
_REF = r"[A-Za-z0-9._-]+/[A-Za-z0-9._-]+"


class SuiteError(ValueError):
    """A suite file that cannot be run as written; the message names the file, row and key."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One benchmark row, exactly as declared (defaults applied)."""

    id: str
    method: str
    dataset: str
    kind: str = "accuracy"
    label: str | None = None
    data_dir: str | None = None
    ipc: int | None = None
    ratio: float | None = None
    users: int | None = None
    preset: str | None = None
    set: dict[str, Any] = dataclasses.field(default_factory=dict)
    iterations: int | None = None
    protocol: str = "fast"
    num_models: int | None = None
    models: tuple[str, ...] | None = None
    seeds: tuple[int, ...] = (0,)
    run: dict[str, Any] = dataclasses.field(default_factory=dict)
    published: dict[str, Any] = dataclasses.field(default_factory=dict)
    summary: bool = True
    notes: str = ""
    timed: int = 3
    warmup: int = 1
    vs: str | None = None
    repeats: int = 1
    commit: str | None = None
    external: str | None = None
    #: DD-Ranking's robust scores too (``{}``: the library's defaults); None: plain accuracy only
    robust: dict[str, Any] | None = None
    byte_budget: int | None = None
    #: iterations (below ``iterations``) at which the distillation's snapshot is evaluated too
    curve: tuple[int, ...] = ()
    #: "<suite>/<row>[/s<seed>]": evaluate the summary that row made instead of distilling
    from_summary: str | None = None
    #: ``datadistill.compact.compact`` options: the summary is converted before it is evaluated
    compact: dict[str, Any] | None = None
    #: the figure line this row is drawn in (None: its method, storage and label settings)
    series: str | None = None

    @property
    def budget(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("ipc", "ratio", "users") if getattr(self, k) is not None}

    def declared(self) -> dict[str, Any]:
        """The row as a JSON-ready dict (what the results file records)."""
        d = dataclasses.asdict(self)
        d["models"] = list(self.models) if self.models is not None else None
        d["seeds"] = list(self.seeds)
        d["curve"] = list(self.curve)
        return d


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    title: str
    notes: str
    rows: tuple[Row, ...]
    path: Path | None = None
    #: ``{"x": "ipc" | "bytes", "title": str | None}`` when the suite declares a figure
    figure: dict[str, Any] | None = None

    def row(self, row_id: str) -> Row:
        for r in self.rows:
            if r.id == row_id:
                return r
        raise SuiteError(f"suite {self.name!r} has no row {row_id!r}; its rows: "
                         f"{', '.join(r.id for r in self.rows)}")


def _known(table: dict[str, Any], known: set[str], what: str, where: str) -> None:
    """``SuiteError`` naming the keys of ``table`` outside ``known`` (``what``: their name)."""
    bad = sorted(set(table) - known)
    if bad:
        raise SuiteError(f"{where}: unknown {what} {bad}; known: {sorted(known)}")


def _row(raw: dict[str, Any], defaults: dict[str, Any], where: str) -> Row:
    merged = {**defaults, **raw}
    unknown = sorted(set(merged) - ROW_KEYS)
    if unknown:
        raise SuiteError(f"{where}: unknown key(s) {unknown}; a row takes {sorted(ROW_KEYS)}")
    for key in ("id", "method", "dataset"):
        if key not in merged:
            raise SuiteError(f"{where}: missing {key!r}")
    if not _ID.match(str(merged["id"])):
        raise SuiteError(f"{where}: row id {merged['id']!r} must be letters, digits, '.', '_', '-'")
    if merged.get("kind", "accuracy") not in KINDS:
        raise SuiteError(f"{where}: kind {merged['kind']!r} is not one of {KINDS}")
    _known(merged.get("run", {}), RUN_KEYS, "run option(s)", where)
    _known(merged.get("published", {}), PUBLISHED_KEYS, "published key(s)", where)
    if merged.get("repeats", 1) < 1 or (merged.get("repeats", 1) > 1
                                        and merged.get("kind", "accuracy") != "speed"):
        raise SuiteError(f"{where}: repeats = {merged['repeats']!r}: a speed row's repeat count >= 1")
    if merged.get("commit") and merged.get("external"):
        raise SuiteError(f"{where}: a row times one thing: commit or external, not both")
    if "robust" in merged:
        merged["robust"] = _robust(merged["robust"], merged.get("kind", "accuracy"), where)
    if merged.get("byte_budget") is not None:
        b = merged["byte_budget"]
        if isinstance(b, bool) or not isinstance(b, int) or b <= 0:
            raise SuiteError(f"{where}: byte_budget = {b!r}: a positive number of bytes")
    if merged.get("series") is not None:
        v = merged["series"]
        if not isinstance(v, str) or not v.strip():
            raise SuiteError(f"{where}: series = {v!r}: the name of the figure line the row is "
                             f"drawn in (a non-empty string)")
    if "curve" in merged:
        merged["curve"] = _curve(merged["curve"], merged, where)
    if merged.get("from_summary") is not None:
        if merged.get("kind", "accuracy") != "accuracy" or merged.get("curve"):
            raise SuiteError(f"{where}: from_summary evaluates a kept summary: an accuracy row "
                             f"without a curve")
        if len(merged.get("seeds", (0,))) != 1:
            raise SuiteError(f"{where}: from_summary names one summary: one seed")
        if not re.fullmatch(_REF + r"(/s\d+)?", str(merged["from_summary"])):
            raise SuiteError(f"{where}: from_summary = {merged['from_summary']!r}: "
                             f"'<suite>/<row>' or '<suite>/<row>/s<seed>'")
    if "compact" in merged:
        c = merged["compact"]
        if not isinstance(c, dict) or not c:
            raise SuiteError(f"{where}: compact = {c!r}: a table of compact options, e.g. "
                             f"{{topk = 50, dtype = \"uint8\"}}")
        _known(c, COMPACT_KEYS, "compact option(s)", where)
        if merged.get("kind", "accuracy") != "accuracy" or merged.get("curve"):
            raise SuiteError(f"{where}: compact converts the summary an accuracy row evaluates "
                             f"(no curve)")
    if "models" in merged:
        merged["models"] = tuple(merged["models"])
    if "seeds" in merged:
        merged["seeds"] = tuple(int(s) for s in merged["seeds"])
    try:
        return Row(**merged)
    except TypeError as e:
        raise SuiteError(f"{where}: {e}") from None


def _curve(value: Any, merged: dict[str, Any], where: str) -> tuple[int, ...]:
    """``curve = [k1, k2, ...]``: increasing iterations, each below the row's ``iterations``."""
    if merged.get("kind", "accuracy") != "accuracy":
        raise SuiteError(f"{where}: a curve is evaluated by accuracy rows only")
    if (not isinstance(value, list) or not value
            or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in value)
            or sorted(set(value)) != value):
        raise SuiteError(f"{where}: curve = {value!r}: a list of increasing iteration counts >= 1")
    its = merged.get("iterations")
    if its is None:
        raise SuiteError(f"{where}: a curve needs the row's own 'iterations' (its last point)")
    if value[-1] >= its:
        raise SuiteError(f"{where}: curve point {value[-1]} is not below iterations = {its} "
                         f"(the row's own evaluation is the last point)")
    return tuple(value)


def _robust(value: Any, kind: str, where: str) -> dict[str, Any] | None:
    """``robust = true | false | {full, lrs_weight, ars_weight}`` as the row keeps it."""
    if value is False:
        return None
    if kind != "accuracy":
        raise SuiteError(f"{where}: robust scores are computed by accuracy rows, not {kind!r} rows")
    if value is True:
        return {}
    if not isinstance(value, dict):
        raise SuiteError(f"{where}: robust = {value!r}: true, false or a table with "
                         f"{sorted(ROBUST_KEYS)}")
    _known(value, ROBUST_KEYS, "robust key(s)", where)
    for k in ("lrs_weight", "ars_weight"):
        if k in value and not (isinstance(value[k], (int, float)) and 0.0 <= value[k] <= 1.0):
            raise SuiteError(f"{where}: robust {k} = {value[k]!r} must be in [0, 1]")
    return dict(value)


def _figure(value: Any, where: str) -> dict[str, Any] | None:
    """``figure = {x = "ipc" | "bytes" | "cpu", title, also, limit}`` as the suite keeps it (None:
    none)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SuiteError(f"{where}: figure = {value!r}: a table {{x = \"ipc\" | \"bytes\", "
                         f"title = \"...\"}}")
    _known(value, FIGURE_KEYS, "figure key(s)", where)
    if value.get("x") not in FIGURE_X:
        raise SuiteError(f"{where}: figure x = {value.get('x')!r}: one of {', '.join(FIGURE_X)} "
                         f"(examples per class, stored bytes or distillation CPU-seconds)")
    if "title" in value and not isinstance(value["title"], str):
        raise SuiteError(f"{where}: figure title = {value['title']!r}: a string")
    also = value.get("also", [])
    if not isinstance(also, list) or not all(
            isinstance(a, str) and re.fullmatch(_REF, a) for a in also):
        raise SuiteError(f"{where}: figure also = {also!r}: a list of '<suite>/<row>' "
                         f"(rows of other suites drawn in this figure too)")
    limit = value.get("limit")
    if limit is not None:
        ok = isinstance(limit, dict) and set(limit) <= {"x", "label"} \
            and isinstance(limit.get("x"), (int, float)) and not isinstance(limit["x"], bool) \
            and limit["x"] > 0 and isinstance(limit.get("label", ""), str)
        if not ok:
            raise SuiteError(f"{where}: figure limit = {limit!r}: a table {{x = <positive "
                             f"number>, label = \"...\"}} (a budget marked on the x axis)")
        limit = {"x": float(limit["x"]), "label": limit.get("label") or ""}
    return {"x": value["x"], "title": value.get("title"), "also": list(also), "limit": limit}


def suite_figure(path: Path) -> dict[str, Any] | None:
    """The ``figure`` a suite file declares (checked), without reading its rows."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(f"{path}: not valid TOML: {e}") from None
    return _figure(raw.get("figure"), str(path))


def parse_suite(text: str, name: str, path: Path | None = None) -> Suite:
    """A ``Suite`` from TOML text; structure only (names are checked by ``check_suite``)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(f"{path or name}: not valid TOML: {e}") from None
    _known(raw, SUITE_KEYS, "top-level key(s)", f"{path or name}")
    defaults = raw.get("defaults", {})
    rows = tuple(_row(r, defaults, f"{path or name}: row {i + 1} ({r.get('id', '?')})")
                 for i, r in enumerate(raw.get("rows", [])))
    ids = [r.id for r in rows]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise SuiteError(f"{path or name}: duplicate row id(s) {dup}")
    for i, r in enumerate(rows):
        src = (r.from_summary or "").split("/")
        if len(src) > 1 and src[0] == name and src[1] not in ids[:i]:
            raise SuiteError(f"{path or name}: row {r.id}: from_summary = {r.from_summary!r} "
                             f"names no earlier row of this suite")
        if r.vs is not None and r.vs not in ids:
            raise SuiteError(f"{path or name}: row {r.id}: vs = {r.vs!r} is not a row of this suite")
    return Suite(name, raw.get("title", name), raw.get("notes", "").strip(), rows, path,
                 _figure(raw.get("figure"), str(path or name)))


def check_suite(suite: Suite) -> Suite:
    """Check every row's method, dataset, preset and parameters against the library's
    registries; raises ``SuiteError`` naming the suite, the row and the unknown name."""
    from .runner import check_row

    for r in suite.rows:
        try:
            check_row(r, suite.name)
        except Exception as e:  # the library's own message lists the known names
            raise SuiteError(f"suite {suite.name!r}, row {r.id!r}: {e}") from None
    return suite


def load_suite(path: str | Path, check: bool = True) -> Suite:
    path = Path(path)
    if not path.exists():
        raise SuiteError(f"no suite file {path}")
    suite = parse_suite(path.read_text(), path.stem, path)
    return check_suite(suite) if check else suite


def find_suite(name: str, suites_dir: Path) -> Path:
    """``name`` as a path, or ``suites_dir/<name>.toml``; the error lists the known suites."""
    p = Path(name)
    if p.suffix == ".toml" and p.exists():
        return p
    p = suites_dir / f"{name}.toml"
    if not p.exists():
        known = ", ".join(sorted(s.stem for s in suites_dir.glob("*.toml"))) or "none"
        raise SuiteError(f"unknown suite {name!r} (no {p}); known suites: {known}")
    return p
