"""Table specs: ``paper_tables/<name>.yaml`` loaded and validated before anything trains.

A spec names the paper table it reproduces, the scale at which this project runs it, its columns
(each a metric key of ``metrics.json`` with its evaluation protocol), its rows (a config plus
overrides; ``matrix`` blocks expand a template over a product of values), the seeds, the published
numbers with their sources, the claims to check and the figure panels. See ``paper_tables/toy.yaml``.

Each YAML mapping is read into its dataclass by field name (``_build``): the valid keys of a row, column,
claim or panel are the fields of ``Row``, ``Column``, ``Claim``, ``Panel``. A ``matrix`` block (top level,
appended after ``rows``; or an entry ``{matrix: ...}`` inside ``rows``, expanded in place) is a row template
plus ``vars``: one row per combination of the variables' values, each ``{name}`` / ``{name[field]}`` in the
template filled in. A string that is exactly one placeholder of a mapping or list value becomes that value
(``overrides: "{method[overrides]}"``). Column keys are checked against the metric registry
(``repro.metrics.registry``) and the numeric fields of the run record (``repro.record.RECORD_FIELDS``).

Numbers in a spec are in the units the page shows (after a column's ``scale``: percent columns in percent).
A column may state the statistic of the published spread (``paper_stat: se`` or ``std``, ``paper_n``: the
paper's number of runs), which the page then shows for ours too, and by which rule a row's published number counts
as reproduced (``reproduction: two_se`` or ``spread``, ``repro.tables.reproduction``); a ``noise_floor`` (page
units) within which a claim's two sides are "within noise"; and which way is ``better`` (``lower`` / ``higher``), which
``best(<group>)`` in a claim needs: the row of that group with the best mean of the column, found from the
data; and ``curve_x: train_seconds`` draws the column's curve against training wall time (``repro.tables.curves``). A
column with ``trace_last: N`` reads a series logged in each run's ``train_log.csv`` instead of a final metric (e.g. a
diagnostic callback's trace): the mean of its last N points, so claims can compare such series. ``traces`` draw one logged training series (a column of each run's ``train_log.csv``, e.g. the
conditioning trace) of several rows on shared axes (``per_seed: true``: one line per seed, no mean). ``correlations``
correlate such a series' end value with a final metric column across the finished runs (``repro.tables.correlate``);
a claim tests one as ``a: "corr(<id>):pearson"`` (pooled over its rows) or ``"corr(<id>, <row>):spearman"`` (one row),
``op`` ``<`` or ``>``, ``b: 0``. A claim side's statistic ``peak`` is each seed's best point on its curve of the
column (the column's ``better`` says which way), averaged over seeds: the score an early stop at the best evaluation
would keep, for rows that peak and then break down (``repro.tables.curves.PEAK_RULE``).
"""
from __future__ import annotations

import itertools
import re
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from repro.metrics.registry import family_of_key, registered_names
from repro.record import RECORD_FIELDS

__all__ = ["SpecError", "Column", "Published", "Row", "Claim", "Panel", "Trace", "Correlation", "TableSpec",
           "load_spec", "find_spec", "list_specs", "BEST", "CORR", "CORR_STATS"]

SPEC_DIR = "paper_tables"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_STATS = ("mean", "std", "se", "peak")
_PAPER_STATS = ("std", "se")
_BETTER = ("", "lower", "higher")
_REPRODUCTION = ("", "two_se", "spread")
_CURVE_X = ("step", "train_seconds")
BEST = re.compile(r"^best\((?P<group>[^()]+)\)$")  # best(<group>): that group's row with the best mean
# corr(<id>) / corr(<id>, <row>): a correlation of the spec's ``correlations``, pooled over its rows or of one row
CORR = re.compile(r"^corr\((?P<id>[^(),\s]+)(?:,\s*(?P<row>[^(),\s]+))?\):(?P<stat>\w+)$")
CORR_STATS = ("pearson", "spearman")
_PLACEHOLDER = re.compile(r"^\{(\w+)((?:\[\w+\])*)\}$")
# a spec's optional ``slurm`` mapping: per-run job resources for ``--launcher slurm`` (GPUs come from a row's devices)
SLURM_KEYS: dict[str, type] = {"partition": str, "time_min": int, "cpus_per_task": int, "mem_gb": int}


class SpecError(ValueError):
    """A table spec is invalid: the message names the file, the offending key and the valid options."""


@dataclass(frozen=True)
class Column:
    """One reported metric: ``key`` in ``metrics.json['metrics']`` (or a top-level record key)."""

    key: str
    label: str
    protocol: str
    paper_protocol: str = ""
    format: str = ".3g"
    scale: float = 1.0  # e.g. 100 to show a fraction as a percentage
    relative_to: str = ""  # a row id: report mean / that row's mean
    paper_stat: str = "std"  # the published spread's statistic ("std" or "se"); ours is shown the same way
    paper_n: int = 0  # the paper's number of runs behind its spread (0: not stated)
    noise_floor: float = 0.0  # in page units: claims whose sides differ by no more are "within noise"
    # in page units: the floor of a curve's flattening tolerance (repro.tables.curves), where it differs from the
    # claims' noise floor (e.g. that is a seed spread, this one evaluation's sampling noise); null: noise_floor
    tail_floor: float | None = None
    better: str = ""  # "lower" / "higher": needed by best(<group>) claims
    curve_x: str = "step"  # the curves figure's x axis: "step" (generator updates) or "train_seconds" (wall time)
    # > 0: ``key`` is a series of each run's train_log.csv (a trace column): a run's value is the mean of its last
    # ``trace_last`` logged points, and the row's curve, by which its convergence is judged, is the series itself
    trace_last: int = 0
    # how a row's published number counts as reproduced (repro.tables.reproduction): "two_se" (our mean within two
    # combined standard errors of the paper's), "spread" (our mean within the paper's mean ± its printed spread), or
    # "" (no verdict: e.g. a printed ± that is no spread over runs)
    reproduction: str = ""

    @property
    def stat_name(self) -> str:
        """The spread's name on the page, the paper's statistic: "s.e." or "std"."""
        return "s.e." if self.paper_stat == "se" else "std"

    @property
    def flat_floor(self) -> float:
        """The floor of the flattening tolerance, in page units: ``tail_floor``, else ``noise_floor``."""
        return self.noise_floor if self.tail_floor is None else float(self.tail_floor)


@dataclass(frozen=True)
class Published:
    """A number as the paper prints it, with where it is printed."""

    value: str
    source: str

    def number(self) -> tuple[float, float] | None:
        """The printed mean and its ± spread (0 when none is printed; ``"21.7±.21"`` reads 21.7 and 0.21); None when
        the text holds no number."""
        numbers = [float(x) for x in re.findall(r"-?(?:\d+(?:\.\d*)?|\.\d+)", self.value)]
        if not numbers:
            return None
        return numbers[0], numbers[1] if "±" in self.value and len(numbers) > 1 else 0.0


@dataclass(frozen=True)
class Row:
    """One table row: a config file plus overrides (dotted CLI keys), trained once per seed."""

    id: str
    label: str
    config: Path
    overrides: dict[str, Any]
    group: str
    devices: int = 1
    ensemble: bool = True  # false: this row's seeds always train as separate processes
    seeds: tuple[int, ...] = ()  # this row's seeds where they differ from the table's (empty: the table's)
    published: dict[str, Published] = field(default_factory=dict)


CLAIM_OPS = ("<", ">", "~")


@dataclass(frozen=True)
class Claim:
    """A paper claim checked on the results: ``a op b`` with ``a``/``b`` = ``row:column:stat`` or a number; ``op``
    ``<`` / ``>``, or ``~``: two rows' means agree within two combined standard errors over their seeds."""

    text: str
    source: str
    a: str
    op: str
    b: str | float
    note: str = ""
    any_length: bool = False  # true: compares two ways of training the same runs at one length (needs no convergence)


@dataclass(frozen=True)
class Panel:
    """One figure per row group: a grid of each run's ``image`` (rows of the group x seeds)."""

    image: str
    title: str = ""


@dataclass(frozen=True)
class Trace:
    """One figure: a series logged in each run's ``train_log.csv`` (``key`` against ``step``) for ``rows``, on
    shared axes (per-seed lines and their mean), so the comparison a claim rests on is read off one plot."""

    key: str
    rows: tuple[str, ...]
    label: str = ""
    title: str = ""
    per_seed: bool = False  # true: every seed's line in its row's colour, no mean line (spread between runs)


@dataclass(frozen=True)
class Correlation:
    """Across the finished runs of ``rows`` (pooled, and per row): the end value of the ``train_log.csv`` series
    ``trace`` (the mean of its last ``last`` logged points) against the final metric ``column``; Pearson r and
    Spearman rho with two-sided p-values, and a scatter figure."""

    id: str
    trace: str
    column: str
    rows: tuple[str, ...]
    last: int = 1  # how many of the trace's last logged points are averaged (1: its final value)
    label: str = ""  # the trace's axis label
    title: str = ""


@dataclass(frozen=True)
class TableSpec:
    name: str
    path: Path
    root: Path  # the folder holding paper_tables/, results/ and runs/
    title: str
    paper: str
    table: str
    scale: str
    seeds: list[int]
    columns: list[Column]
    rows: list[Row]
    overrides: dict[str, Any] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    panels: list[Panel] = field(default_factory=list)
    charts: list[str] = field(default_factory=list)  # column keys drawn as a bar chart over rows
    traces: list[Trace] = field(default_factory=list)
    correlations: list[Correlation] = field(default_factory=list)
    notes: str = ""
    steps_note: str = ""  # the lengths run now and why, in a few lines
    steps_history: str = ""  # how they came about (earlier lengths, what their curves showed): folded on the page
    slurm: dict[str, Any] = field(default_factory=dict)  # SLURM_KEYS: resources of each run's job (--launcher slurm)
    ensemble_size: int | None = None  # most seeds of a row per seed-ensemble process (null: all); repro.tables.jobs
    # keep each finished job's final state beside its records under results/ (committed) instead of under the
    # git-ignored runs/, so a later doubling of the row continues on any machine (repro.tables.extend.final_state_dir)
    commit_final_states: bool = False

    def seeds_of(self, row: Row) -> list[int]:
        """The row's seeds: its own ``seeds`` where it sets them (e.g. more seeds where they decide a verdict),
        else the table's."""
        return list(row.seeds) or self.seeds

    def row(self, row_id: str) -> Row:
        for r in self.rows:
            if r.id == row_id:
                return r
        raise SpecError(f"{self.path}: unknown row {row_id!r}; valid: {', '.join(r.id for r in self.rows)}")

    def column(self, key: str) -> Column:
        for c in self.columns:
            if c.key == key:
                return c
        raise SpecError(f"{self.path}: unknown column {key!r}; valid: {', '.join(c.key for c in self.columns)}")

    @property
    def results_dir(self) -> Path:
        return self.root / "results" / self.name

    @property
    def runs_dir(self) -> Path:
        """Full run folders (checkpoints, logs); under ``runs/``, which git ignores."""
        return self.root / "runs" / "tables" / self.name


def _require(data: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    if key not in data:
        raise SpecError(f"{where}: missing required key {key!r}")
    if not isinstance(data[key], kind):
        raise SpecError(f"{where}: {key!r} must be {kind}, got {type(data[key]).__name__}")
    return data[key]


def _check_keys(data: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(sorted(allowed))}")


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(value)
    return value


_SCALARS = {"str": str, "float": float, "int": int, "bool": _boolean}


def _build(cls: type, data: Any, where: str, derived: dict[str, Any], extra_keys: tuple[str, ...] = (),
           internal: tuple[str, ...] = ()) -> Any:
    """``cls`` from the YAML mapping ``data`` by field name. The valid keys are ``cls``'s fields except
    ``internal`` ones, plus ``extra_keys`` (read by the caller); a field without default must be given;
    ``derived`` holds the fields the caller computed itself (validated, converted); every other value is
    converted to its field's scalar type (str, float, int)."""
    if not isinstance(data, dict):
        raise SpecError(f"{where}: must be a mapping, got {type(data).__name__}")
    _check_keys(data, {f.name for f in fields(cls)} - set(internal) | set(extra_keys), where)
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in derived:
            values[f.name] = derived[f.name]
        elif f.name in data:
            convert = _SCALARS.get(str(f.type))
            try:
                values[f.name] = convert(data[f.name]) if convert else data[f.name]
            except (TypeError, ValueError):
                what = f"{f.name} must be true or false" if f.type == "bool" else f"{f.name!r} must be {f.type}"
                raise SpecError(f"{where}: {what}, got {data[f.name]!r}") from None
        elif f.default is MISSING and f.default_factory is MISSING:
            raise SpecError(f"{where}: missing required key {f.name!r}")
    return cls(**values)


def _lookup(env: dict[str, Any], name: str, index: str) -> Any:
    value = env[name]
    for key in re.findall(r"\[(\w+)\]", index):
        value = value[key]
    return value


def _fill(value: Any, env: dict[str, Any]) -> Any:
    """Substitute ``{name}`` placeholders in strings (recursively) for a matrix row; a string that is exactly
    one placeholder of a mapping or list value becomes that value."""
    if isinstance(value, str):
        whole = _PLACEHOLDER.match(value)
        try:
            if whole:
                found = _lookup(env, *whole.groups())
                if isinstance(found, (dict, list)):
                    return found
            return value.format(**env)
        except (KeyError, TypeError) as err:
            raise SpecError(f"matrix template {value!r} uses {err} which is not a matrix variable") from None
    if isinstance(value, dict):
        return {k: _fill(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, env) for v in value]
    return value


def _expand_matrix(block: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(block, dict):
        raise SpecError(f"{where}: a matrix block is a mapping of 'vars' and a row template")
    variables = _require(block, "vars", where, dict)
    if not variables or not all(isinstance(v, list) and v for v in variables.values()):
        raise SpecError(f"{where}: 'vars' must map each name to a non-empty list of values")
    template = {k: v for k, v in block.items() if k != "vars"}
    names = list(variables)
    # a value may be a mapping, used field by field: "{setting[lr]}" (zipped settings such as SN-GAN's A-F)
    return [_fill(template, dict(zip(names, combo))) for combo in itertools.product(*(variables[n] for n in names))]


def _raw_rows(data: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """``rows`` in order, a ``{matrix: block}`` entry expanded in place, then the top-level ``matrix`` blocks."""
    rows: list[dict[str, Any]] = []
    for i, entry in enumerate(data.get("rows") or []):
        if isinstance(entry, dict) and set(entry) == {"matrix"}:
            rows += _expand_matrix(entry["matrix"], f"{where}: rows[{i}].matrix")
        else:
            rows.append(entry)
    for i, block in enumerate(data.get("matrix") or []):
        rows += _expand_matrix(block, f"{where}: matrix[{i}]")
    return rows


def _published(data: Any, where: str, columns: set[str]) -> dict[str, Published]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{where}.published must map column keys to {{value, source}}")
    out = {}
    for key, entry in data.items():
        if key not in columns:
            raise SpecError(f"{where}.published: unknown column {key!r}; valid: {', '.join(sorted(columns))}")
        if not isinstance(entry, dict) or not entry.get("source") or "value" not in entry:
            raise SpecError(f"{where}.published.{key}: needs both 'value' and 'source' (paper, table/figure)")
        out[key] = Published(str(entry["value"]), str(entry["source"]))
    return out


def _column(data: Any, where: str) -> Column:
    key = str(_require(data, "key", where)) if isinstance(data, dict) else ""
    column = _build(Column, data, where, {"label": str(data.get("label", key))} if key else {})
    if column.trace_last < 0:
        raise SpecError(f"{where}: trace_last must be >= 0 (0: a metric of metrics.json; N > 0: the mean of the last "
                        f"N logged points of the train_log.csv series {column.key!r})")
    if column.trace_last and column.curve_x != "step":
        raise SpecError(f"{where}: a trace column (trace_last > 0) is drawn against generator step; remove curve_x")
    if not column.trace_last and family_of_key(column.key) is None and column.key not in RECORD_FIELDS:
        raise SpecError(f"{where}: column {column.key!r} is no registered metric (families: {registered_names()}) "
                        f"and no run-record field ({', '.join(RECORD_FIELDS)})")
    for key, value, valid in (("paper_stat", column.paper_stat, _PAPER_STATS), ("better", column.better, _BETTER),
                              ("curve_x", column.curve_x, _CURVE_X), ("reproduction", column.reproduction, _REPRODUCTION)):
        if value not in valid:
            raise SpecError(f"{where}: {key} {value!r} is not valid; valid: {', '.join(v or '(empty)' for v in valid)}")
    if column.noise_floor < 0 or column.paper_n < 0:
        raise SpecError(f"{where}: noise_floor and paper_n must be >= 0")
    if column.reproduction == "two_se" and column.paper_stat != "se" and not column.paper_n:
        raise SpecError(f"{where}: reproduction two_se needs the paper's standard error: set paper_stat: se, or "
                        "paper_n (its number of runs, so that se = std / sqrt(n)); or use reproduction: spread")
    tail = column.tail_floor
    if tail is not None and (isinstance(tail, bool) or not isinstance(tail, (int, float)) or tail < 0):
        raise SpecError(f"{where}: tail_floor must be a number >= 0 or null (the noise floor), got {tail!r}")
    return column


def _seeds(seeds: Any, where: str) -> list[int]:
    """A table's or a row's ``seeds``: a non-empty list of distinct integers."""
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise SpecError(f"{where}: 'seeds' must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"{where}: 'seeds' lists {sorted({s for s in seeds if seeds.count(s) > 1})} more than once; "
                        "each seed is one run in its own folder")
    return seeds


def _row(data: Any, where: str, root: Path, columns: set[str]) -> Row:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: a row is a mapping (id, config, ...), got {type(data).__name__}")
    row_id = str(_require(data, "id", where))
    if not _ID.match(row_id):
        raise SpecError(f"{where}: row id {row_id!r} must be letters, digits and _ . + - (it names a folder)")
    config = Path(str(_require(data, "config", f"{where} (row {row_id!r})")))
    config = config if config.is_absolute() else root / config
    if not config.is_file():
        raise SpecError(f"row {row_id!r}: config file {config} does not exist")
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise SpecError(f"row {row_id!r}: 'overrides' must map dotted keys (e.g. trainer.max_steps) to values")
    devices = data.get("devices", 1)
    if not isinstance(devices, int) or devices < 1:
        raise SpecError(f"row {row_id!r}: 'devices' must be a positive integer, got {devices!r}")
    seeds = tuple(_seeds(data["seeds"], f"row {row_id!r}")) if "seeds" in data else ()
    derived = {"id": row_id, "label": str(data.get("label", row_id)), "config": config, "overrides": dict(overrides),
               "group": str(data.get("group", row_id)), "devices": devices, "seeds": seeds,
               "published": _published(data.get("published"), f"row {row_id!r}", columns)}
    return _build(Row, data, where, derived)


def _ref(value: Any, spec_rows: set[str], columns: dict[str, Column], groups: set[str], where: str) -> str | float:
    """A claim side: a number (page units) or 'row:column:stat', where row may be 'best(<group>)'."""
    if isinstance(value, (int, float)):
        return float(value)
    parts = str(value).split(":")
    best = BEST.match(parts[0])
    known_row = parts[0] in spec_rows or (best is not None and best["group"] in groups)
    if len(parts) != 3 or not known_row or parts[1] not in columns or parts[2] not in _STATS:
        raise SpecError(f"{where}: {value!r} must be a number or 'row:column:stat' with a known row (or "
                        f"best(<group>), groups: {', '.join(sorted(groups))}), column ({', '.join(sorted(columns))}) "
                        f"and stat ({', '.join(_STATS)})")
    if (best is not None or parts[2] == "peak") and not columns[parts[1]].better:
        raise SpecError(f"{where}: {value!r} needs column {parts[1]!r} to say which way is better "
                        "(better: lower or higher)")
    return str(value)


def _corr_claim(data: dict[str, Any], where: str, op: str, correlations: dict[str, Correlation]) -> dict[str, Any]:
    """The sides of a claim on a correlation: ``a`` = ``corr(<id>):<stat>`` or ``corr(<id>, <row>):<stat>``,
    ``op`` ``<`` / ``>``, ``b`` = 0 (the p-value tests a zero correlation, so 0 is the only comparison it decides)."""
    a, b = str(data["a"]), _require(data, "b", where, (str, int, float))
    match = CORR.match(a)
    if match is None or match["id"] not in correlations or match["stat"] not in CORR_STATS:
        raise SpecError(f"{where}: {a!r} must be 'corr(<id>):<stat>' (pooled over the correlation's rows) or "
                        f"'corr(<id>, <row>):<stat>' with a known correlation id "
                        f"({', '.join(sorted(correlations)) or 'none: the spec has no correlations'}) and stat "
                        f"({', '.join(CORR_STATS)})")
    rows = correlations[match["id"]].rows
    if match["row"] and match["row"] not in rows:
        raise SpecError(f"{where}: {a!r}: row {match['row']!r} is not one of correlation {match['id']!r}'s rows "
                        f"({', '.join(rows)})")
    if op not in ("<", ">") or isinstance(b, (str, bool)) or b != 0:
        raise SpecError(f"{where}: a claim on {a!r} needs op '<' or '>' and b: 0 (its two-sided p-value tests a "
                        f"zero correlation), got op {op!r}, b {b!r}")
    return {"op": op, "a": a, "b": 0.0}


def _claim(data: Any, where: str, rows: set[str], columns: dict[str, Column], groups: set[str],
           correlations: dict[str, Correlation]) -> Claim:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: a claim is a mapping (text, source, a, op, b)")
    op = str(_require(data, "op", where))
    if op not in CLAIM_OPS:
        raise SpecError(f"{where}: op {op!r} is not valid; valid: {', '.join(CLAIM_OPS)}")
    a = _require(data, "a", where, (str, int, float))
    if isinstance(a, str) and a.startswith("corr("):
        return _build(Claim, data, where, _corr_claim(data, where, op, correlations))
    if str(data.get("b", "")).startswith("corr("):
        raise SpecError(f"{where}: a correlation goes on side a ('a: corr(<id>):<stat>', b: 0)")
    derived = {"op": op, "a": str(_ref(a, rows, columns, groups, where)),
               "b": _ref(_require(data, "b", where, (str, int, float)), rows, columns, groups, where)}
    if op == "~" and not all(isinstance(v, str) and v.endswith(":mean") for v in (derived["a"], derived["b"])):
        raise SpecError(f"{where}: op '~' compares two rows' means (a and b as row:column:mean)")
    return _build(Claim, data, where, derived)


def _row_ids(data: Any, where: str, ids: list[str]) -> tuple[str, ...]:
    rows = _require(data, "rows", where, list) if isinstance(data, dict) else []
    unknown = [str(r) for r in rows if r not in ids]
    if unknown or not rows:
        raise SpecError(f"{where}: rows must be row ids; unknown: {', '.join(unknown) or '(none given)'}")
    return tuple(rows)


def _trace(data: Any, where: str, ids: list[str]) -> Trace:
    rows = _row_ids(data, where, ids)
    return _build(Trace, data, where, {"rows": rows})


def _correlation(data: Any, where: str, ids: list[str], columns: set[str]) -> Correlation:
    rows = _row_ids(data, where, ids)
    corr = _build(Correlation, data, where, {"rows": rows})
    if not _ID.match(corr.id):
        raise SpecError(f"{where}: id {corr.id!r} must be letters, digits and _ . + - (claims name it: corr(<id>))")
    if not corr.trace:
        raise SpecError(f"{where}: trace must name a column of the runs' train_log.csv "
                        "(e.g. conditioning/log_cond_mean)")
    if corr.column not in columns:
        raise SpecError(f"{where}: column {corr.column!r} is not a column of the table; "
                        f"valid: {', '.join(sorted(columns))}")
    if corr.last < 1:
        raise SpecError(f"{where}: last must be >= 1 (how many of the trace's last logged points are averaged)")
    return corr


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a mapping with a repeated key (plain YAML keeps the last one silently);
    keys a ``<<`` merge brings in may still be overridden."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` entries may be overridden, by design
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_spec(path: str | Path) -> TableSpec:
    """Read and validate a spec; every row's config must exist and every column name a registered metric
    (checked here, before any training)."""
    path = Path(path).resolve()
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except (OSError, yaml.YAMLError) as err:
        raise SpecError(f"cannot read table spec {path}: {err}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a table spec is a YAML mapping")
    where = str(path)
    root = path.parent.parent
    columns = [_column(c, f"{where}: columns[{i}]") for i, c in enumerate(_require(data, "columns", where, list))]
    keys = {c.key for c in columns}
    raw_rows = _raw_rows(data, where)
    if not raw_rows:
        raise SpecError(f"{where}: a table needs 'rows' or 'matrix' entries")
    rows = [_row(r, f"{where}: rows[{i}]", root, keys) for i, r in enumerate(raw_rows)]
    ids = [r.id for r in rows]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise SpecError(f"{where}: duplicate row id {dup[0]!r}")
    for c in columns:
        if c.relative_to and c.relative_to not in ids:
            raise SpecError(f"{where}: column {c.key!r} relative_to {c.relative_to!r} is not a row; valid: {', '.join(ids)}")
    seeds = _seeds(data.get("seeds", [0]), where)
    slurm = data.get("slurm") or {}
    if not isinstance(slurm, dict):
        raise SpecError(f"{where}: 'slurm' must be a mapping with keys from: {', '.join(SLURM_KEYS)}")
    _check_keys(slurm, set(SLURM_KEYS), f"{where}: slurm")
    for key, value in slurm.items():
        if not isinstance(value, SLURM_KEYS[key]) or isinstance(value, bool) or (isinstance(value, int) and value < 1):
            raise SpecError(f"{where}: slurm.{key} must be a {'positive integer' if SLURM_KEYS[key] is int else 'string'}"
                            f", got {value!r}")
    size = data.get("ensemble_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise SpecError(f"{where}: 'ensemble_size' must be a positive integer or null (all seeds of a row in one "
                        f"process), got {size!r}")
    by_key, groups = {c.key: c for c in columns}, {r.group for r in rows}
    correlations = [_correlation(c, f"{where}: correlations[{i}]", ids, keys)
                    for i, c in enumerate(data.get("correlations") or [])]
    by_id = {c.id: c for c in correlations}
    dup = sorted({c.id for c in correlations if by_id[c.id] is not c})
    if dup:
        raise SpecError(f"{where}: correlations: duplicate id {dup[0]!r}")
    claims = [_claim(c, f"{where}: claims[{i}]", set(ids), by_key, groups, by_id)
              for i, c in enumerate(data.get("claims") or [])]
    panels = [_build(Panel, p, f"{where}: panels[{i}]", {}) for i, p in enumerate(data.get("panels") or [])]
    charts = [str(k) for k in data.get("charts") or []]
    for key in charts:
        if key not in keys:
            raise SpecError(f"{where}: charts: unknown column {key!r}; valid: {', '.join(sorted(keys))}")
    traces = [_trace(t, f"{where}: traces[{i}]", ids) for i, t in enumerate(data.get("traces") or [])]
    derived = {"name": path.stem, "path": path, "root": root, "seeds": seeds, "columns": columns, "rows": rows,
               "slurm": dict(slurm),
               "overrides": dict(data.get("overrides") or {}), "claims": claims, "panels": panels, "charts": charts,
               "traces": traces, "correlations": correlations}
    return _build(TableSpec, data, where, derived, extra_keys=("matrix",), internal=("name", "path", "root"))


def with_length_scale(spec: TableSpec, factor: float) -> TableSpec:
    """``spec`` with every row's ``trainer.max_steps`` (its override, else the table's) times ``factor`` (0 < factor
    < 1, rounded): the shorter runs a length check compares with (``repro.tables.curves``); ``repro reproduce
    --rerun-stale`` then trains the spec's own length and keeps their finals. A row whose length comes from its
    config file is refused: the spec must state it to scale it."""
    if not 0 < factor < 1:
        raise SpecError(f"--length-scale must be between 0 and 1 (the shorter runs of a length check), got {factor}")
    rows, unscaled = [], []
    for row in spec.rows:
        steps = row.overrides.get("trainer.max_steps", spec.overrides.get("trainer.max_steps"))
        steps = int(steps) if isinstance(steps, str) and steps.isdigit() else steps
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            unscaled.append(row.id)
            continue
        rows.append(replace(row, overrides={**row.overrides, "trainer.max_steps": max(1, round(steps * factor))}))
    if unscaled:
        raise SpecError(f"--length-scale: row(s) {', '.join(unscaled[:4])} take trainer.max_steps from their config "
                        f"file; give it in {spec.path.name}'s overrides (table or row) to scale it")
    return replace(spec, rows=rows)


def list_specs(root: Path) -> list[Path]:
    return sorted((root / SPEC_DIR).glob("*.yaml"))


def find_spec(name: str, roots: list[Path]) -> Path:
    """A spec by file path, or by name under ``<root>/paper_tables/`` for the first root that has it."""
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml") and as_path.is_file():
        return as_path
    for root in roots:
        candidate = root / SPEC_DIR / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for root in roots for p in list_specs(root)})
    raise SpecError(f"unknown table {name!r}; valid: {', '.join(known) or '(none found)'}")
