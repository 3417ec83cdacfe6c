"""A row's resolved config (every key ``repro fit`` would train with), and a cache that spares ``--dry-run`` Lightning.

The full parse (``repro.fit.parse_config``: LightningCLI / jsonargparse over every class signature) is what a run
does; it imports Lightning (6 s idle, ~18 s under load) and costs ~0.35 s a row. Its result is a pure function of
its inputs, all of which can be found with a YAML walk: the ``repro fit`` arguments (config paths resolved as
``repro fit`` resolves them), the content of every file they name (``--config`` files, the files those include,
e.g. ``generator: ../nets/mlp_g.yaml``, any path in an override), the code whose signatures give the defaults
(every ``.py`` of the ``repro`` package, and the sources of any non-installed module a ``class_path`` names), the
installed distributions with their versions, and Python's version. ``row_inputs`` gathers and hashes them (no
torch, no Lightning); every full parse stores its result under that key in ``$REPRO_CACHE_DIR/resolved-configs``
(default ``~/.cache/repro/resolved-configs``). A hit is that same parse's result; a changed input is a miss.

Pruning (``prune_cache``, the policy of ``repro.cachefiles.prune``): every changed input leaves its old entries
behind (~8 KB each), so the first write of each process removes the entries not used (read or written: a hit sets
its file's mtime, as atime is often not kept) for ``MAX_AGE_DAYS``, then the least recently used ones while the
folder holds more than ``MAX_BYTES``. A pruned entry costs one full parse the next time it is needed.

Why a cache and not a resolver of our own: of the ~110 keys a row resolves to, its YAML and overrides state ~25;
the rest are defaults and normalisations (class names to ``class_path`` + ``init_args``, tuples, merged nets)
that only the signatures of Lightning's ``Trainer`` and repro's LightningModules give, i.e. importing Lightning.

Who parses (``parse``): the training path always parses fully (``"always"``; it stores what it parsed);
``--report-only`` and the stale check use the cache and parse the misses (``"missing"``); ``--dry-run`` uses
the cache only (``"never"``) and lists the rows it could not check (``--check-configs`` parses them).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.machinery
import io
import json
import os
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import yaml
from rich.console import Console

from repro.cachefiles import cache_root, mark_used, prune
from repro.configfiles import resolve_config_args
from repro.errors import UserError
from repro.record import DONE, status_of
from repro.tables.plan import Records, Run
from repro.tables.spec import SpecError, TableSpec
from repro.setting_defaults import UNKNOWN, setting_default
from repro.tables.stale import Stale, code_changes, code_warning, flat_keys, stale_runs

__all__ = ["PARSE_POLICIES", "RowInputs", "row_inputs", "cache_dir", "prune_cache", "check_configs", "resolve_without",
           "model_answers", "model_defaults", "stacking_refusals", "table_staleness", "unchecked_note", "MAX_AGE_DAYS", "MAX_BYTES"]

PARSE_POLICIES = ("always", "missing", "never")
_FORMAT = 1  # bump when what is stored changes
_ANSWER_FORMAT = 2  # the same for ``model_answers`` (2: one "answer" field for every kind)
_CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
_HASHED_BYTES = 1 << 20
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
_PACKAGE = Path(__file__).resolve().parents[1]  # the repro package whose signatures a parse reads
# what the parse (``repro.fit`` and below) cannot import: the layers contract in pyproject.toml forbids it
_ABOVE_FIT = ("tables", "bench", "cli.py", "__main__.py")
_PARSED: dict[str, dict[str, Any]] = {}  # full parses of this process, by key
MAX_AGE_DAYS = 30  # a cache entry not read or written for this long is removed
MAX_BYTES = 64 << 20  # beyond this total the least recently used entries are removed (~8,000 entries)
_pruned = False  # this process has pruned the cache (once, at its first write)


def cache_dir() -> Path:
    """``$REPRO_CACHE_DIR/resolved-configs``, or ``~/.cache/repro/resolved-configs``."""
    return cache_root() / "resolved-configs"


@contextlib.contextmanager
def _cwd(root: Path) -> Iterator[None]:
    """Run in ``root``, as the training subprocess sees relative paths."""
    before = Path.cwd()
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(before)


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when installed: the same documents, faster


@lru_cache(maxsize=None)
def _strings(text: str) -> tuple[str, ...]:
    """Every string value of a YAML (or JSON) document, memoised by content (rows share their nets' and trainer's
    files); libyaml's loader when installed (the same documents, faster)."""
    out: list[str] = []
    stack = [yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack += item.values()
        elif isinstance(item, list):
            stack += item
        elif isinstance(item, str) and item:
            out.append(item)
    return tuple(out)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _py_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


@lru_cache(maxsize=1)
def _environment() -> str:
    """One hash of what gives a parse its defaults besides the files named: the repro package's sources, the
    installed distributions (their metadata folders carry the versions) and Python's version."""
    digest = hashlib.sha256(sys.version.encode())
    for path in _py_files(_PACKAGE):
        if path.relative_to(_PACKAGE).parts[0] in _ABOVE_FIT:
            continue
        digest.update(f"{path.relative_to(_PACKAGE)}\0{_sha256(path)}\0".encode())
    installed: set[str] = set()
    for entry in sys.path:  # the installation folders only: how Python was started (-m, -c, a script) adds others
        if any(part in ("site-packages", "dist-packages") for part in Path(entry).parts):
            with contextlib.suppress(OSError):
                installed |= {n for n in os.listdir(entry) if n.endswith((".dist-info", ".egg-info"))}
    digest.update("\0".join(sorted(installed)).encode())
    return digest.hexdigest()


@lru_cache(maxsize=None)
def _module_sources(dotted: str, root: Path) -> list[Path]:
    """The source files of a ``class_path``'s top-level module when neither the repro package (hashed whole) nor
    an installed distribution (versioned) covers it, e.g. a user's own ``mygans.MyGAN`` beside the table (the
    run's folder ``root`` is on its path); [] otherwise."""
    top = dotted.split(".", 1)[0]
    if top == "repro":
        return []
    try:  # searches the folders only, imports nothing
        found = importlib.machinery.PathFinder.find_spec(top, [str(root), *sys.path])
    except (ImportError, ValueError):
        return []
    origin = Path(found.origin) if found and found.origin and found.has_location else None
    if origin is None or any(part in ("site-packages", "dist-packages") for part in origin.parts) \
            or str(origin).startswith((sys.base_prefix, sys.prefix)):
        return []
    return _py_files(origin.parent) if origin.name == "__init__.py" else [origin]


@dataclass(frozen=True)
class RowInputs:
    """Everything a row's full parse reads: its arguments as the parser gets them, the folder it runs in, and the
    files it may read with their content hashes; ``key`` names the parse's result."""

    args: tuple[str, ...]
    root: Path
    files: tuple[tuple[str, str], ...]  # (absolute path, sha256; size and mtime of a big non-config file)

    @property
    def key(self) -> str:
        payload = json.dumps([_FORMAT, str(self.root), self.args, self.files, _environment()])
        return hashlib.sha256(payload.encode()).hexdigest()


class _Walk:
    """The files a parse may read, found from the arguments: a string that names an existing file (relative to
    the file it appears in, a file including that one, or the run folder) is read; config files recursively."""

    def __init__(self, root: Path):
        self.root = root
        self.files: dict[Path, str] = {}

    def file(self, path: Path, dirs: tuple[Path, ...]) -> None:
        path = Path(os.path.normpath(os.path.abspath(path)))
        if path in self.files:
            return
        size = path.stat().st_size
        # a parse reads config files; a big file a value names (weights, a data set) it only passes on as a path
        self.files[path] = _sha256(path) if size <= _HASHED_BYTES or path.suffix in _CONFIG_SUFFIXES \
            else f"size {size}, mtime {path.stat().st_mtime_ns}"
        if path.suffix in _CONFIG_SUFFIXES:
            try:
                strings = _strings(path.read_text())
            except yaml.YAMLError as err:
                raise UserError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
            for text in strings:
                self.string(text, (path.parent, *dirs))

    def string(self, text: str, dirs: tuple[Path, ...]) -> None:
        if _DOTTED.fullmatch(text):
            for source in _module_sources(text, self.root):
                self.file(source, dirs)
        for folder in (*dirs, self.root):
            with contextlib.suppress(OSError, ValueError):  # a long or odd string is no file
                if os.path.isfile(folder / text):
                    self.file(folder / text, dirs)


def row_inputs(args: list[str], root: Path) -> RowInputs:
    """The inputs of ``repro fit ARGS`` run in ``root`` (see the module docstring); reads YAML only. A missing
    ``--config`` file or invalid YAML raises ``UserError``, as the run would fail on it."""
    with _cwd(root):
        resolved = resolve_config_args(args)
    walk = _Walk(Path(os.path.abspath(root)))
    i = 0
    while i < len(resolved):
        arg = resolved[i]
        name, eq, value = arg.partition("=")
        if not eq and i + 1 < len(resolved) and not resolved[i + 1].startswith("--"):
            value, i = resolved[i + 1], i + 1
        if name in ("--config", "-c"):
            walk.file(root / value, ())
        elif value:
            if value[:1] in ("{", "["):  # a mapping or list given as JSON / YAML flow
                with contextlib.suppress(yaml.YAMLError):
                    for text in _strings(value):
                        walk.string(text, ())
            walk.string(value, ())
        i += 1
    files = tuple(sorted((str(p), h) for p, h in walk.files.items()))
    return RowInputs(tuple(resolved), root.resolve(), files)


def _read_entry(path: Path, key: str) -> dict[str, Any] | None:
    """The cache entry at ``path`` if it is stored under ``key``, marked as used (its mtime set to now); else None."""
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    mark_used(path)
    return entry


def _read_cache(inputs: RowInputs) -> dict[str, Any] | None:
    entry = _read_entry(cache_dir() / f"{inputs.key}.json", inputs.key)
    return None if entry is None else entry.get("config")


def prune_cache(folder: Path, now: float | None = None) -> list[Path]:
    """Remove from ``folder`` the entries (and left-over temporary files) last used more than ``MAX_AGE_DAYS`` ago,
    then the least recently used entries while the rest exceed ``MAX_BYTES``; returns what was removed."""
    return prune(folder, ".json", MAX_AGE_DAYS, MAX_BYTES, now=now)


def _write_json(path: Path, entry: dict[str, Any]) -> None:
    """Store a cache entry atomically (tables may parse at once), pruning the cache at this process's first write;
    a cache that cannot be written is only slower."""
    global _pruned
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, path)
    if not _pruned:
        _pruned = True
        prune_cache(path.parent)


def _write_cache(inputs: RowInputs, config: dict[str, Any]) -> None:
    """Store a full parse's result under its inputs' key."""
    _write_json(cache_dir() / f"{inputs.key}.json",
                {"key": inputs.key, "args": inputs.args, "files": inputs.files, "config": config})


def _full_parse(inputs: RowInputs) -> dict[str, Any]:
    """The resolved config as ``repro fit`` parses it (Lightning; seconds to import), as plain values."""
    if inputs.key not in _PARSED:
        from repro.fit import parse_config

        with _cwd(inputs.root), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Lightning warns that args are passed in-process, by design
            config = parse_config(list(inputs.args)).as_dict()
        config.pop("config", None)  # the config files read: where the inputs came from, not an input
        _PARSED[inputs.key] = json.loads(json.dumps(config, default=str))  # as a run's config.yaml reads back
        _write_cache(inputs, _PARSED[inputs.key])
    return _PARSED[inputs.key]


def check_configs(spec: TableSpec, runs: list[Run], parse: str = "always") -> dict[str, dict[str, Any]]:
    """Each row's resolved config, from its first run's arguments (the row's config with its overrides); one
    ``SpecError`` for the first row that does not parse. ``parse``: ``always`` parses fully (Lightning);
    ``missing`` takes a cached parse of the same inputs, else parses; ``never`` takes cached ones only and
    leaves the other rows out of the result (their errors are not found)."""
    if parse not in PARSE_POLICIES:
        raise ValueError(f"parse={parse!r}; valid: {PARSE_POLICIES}")
    first: dict[str, Run] = {}
    for run in runs:
        first.setdefault(run.row.id, run)
    configs: dict[str, dict[str, Any]] = {}
    for run in first.values():
        err = io.StringIO()
        try:
            inputs = row_inputs(run.fit_args(), spec.root)
            config = _PARSED.get(inputs.key)
            if config is None and parse != "always":
                config = _read_cache(inputs)
            if config is None and parse != "never":
                with contextlib.redirect_stderr(err):
                    config = _full_parse(inputs)
        except (UserError, OSError, SystemExit, ValueError, TypeError, KeyError) as exc:
            lines = [ln for ln in err.getvalue().splitlines() if ln.strip()] or [str(exc)]
            raise SpecError(f"{spec.path.name}: row {run.row.id!r} ({run.row.config}) does not parse: "
                            f"{lines[-1]}") from None
        if config is not None:
            configs[run.row.id] = config
    return configs


def resolve_without(run: Run, keys: list[str], parse: str = "always") -> dict[str, Any] | None:
    """``run``'s row resolved as ``check_configs`` resolves it (same cache and ``parse``) with the spec's and row's
    settings of ``keys`` left out; None when that has no cached parse under ``never`` or does not parse."""
    drop = set(keys)
    spec = replace(run.spec, overrides={k: v for k, v in run.spec.overrides.items() if k not in drop})
    row = replace(run.row, overrides={k: v for k, v in run.row.overrides.items() if k not in drop})
    try:
        return check_configs(spec, [Run(spec, row, run.seed)], parse).get(row.id)
    except SpecError:
        return None


def model_answers(configs: dict[str, dict[str, Any] | None], kind: str, answer: Callable[[dict[str, Any]], Any],
                  parse: str = "always") -> tuple[dict[str, Any], list[str]]:
    """Per row, ``answer(config)`` (a JSON value; it may build the model: torch and Lightning), and the rows left
    unchecked. Like a parse, the answer is a function of the row's resolved model config and the code and libraries,
    and is cached under their hash and ``kind``; ``parse`` as in ``check_configs`` (a row without a config, or
    ``never`` without a cached answer: unchecked)."""
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for row, config in configs.items():
        if config is None or "model" not in config:
            unknown.append(row)
            continue
        model = json.dumps(config["model"], sort_keys=True)
        key = hashlib.sha256(json.dumps([_ANSWER_FORMAT, kind, model, _environment()]).encode()).hexdigest()
        path = cache_dir() / f"{kind}-{key}.json"
        cached = _read_entry(path, key) if parse != "always" else None
        if cached is not None:
            out[row] = cached.get("answer")
        elif parse == "never":
            unknown.append(row)
        else:
            out[row] = answer(config)
            _write_json(path, {"key": key, "answer": out[row]})
    return out, unknown


def _stacking_refusal(config: dict[str, Any]) -> str | None:
    from repro.tables.jobs import stacking_refusal  # builds the model

    return stacking_refusal(config)


def stacking_refusals(configs: dict[str, dict[str, Any] | None], parse: str = "always"
                      ) -> tuple[dict[str, str | None], list[str]]:
    """Per row, why its model cannot train as a seed ensemble (``repro.tables.jobs.stacking_refusal``, which
    builds the model) or None, and the rows left unchecked (``model_answers``)."""
    return model_answers(configs, "stacking", _stacking_refusal, parse)


def _model_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """The default (``repro.setting_defaults``: imports the classes the config names) of each model setting of a
    resolved ``config`` that has a plain-data one, by dotted key."""
    out = {}
    for key in flat_keys(config["model"], "model"):
        value = setting_default(config, key)
        if value is not UNKNOWN:
            out[key] = value
    return out


def model_defaults(configs: dict[str, dict[str, Any] | None], parse: str = "always"
                   ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Per row, its model settings' defaults (``_model_defaults``), and the rows left unchecked (``model_answers``)."""
    return model_answers(configs, "defaults", _model_defaults, parse)


def table_staleness(spec: TableSpec, records: Records, console: Console | None = None,
                    parse: str = "missing") -> list[Stale]:
    """The done runs of ``records`` whose config differs from the spec's now (each row resolved by
    ``check_configs(..., parse)`` from its first done run; ``resolve_without`` where a record lacks a key the spec
    sets, ``model_defaults`` where it lacks one a config file sets); prints the code warning (records trained at
    other commits), and each row that no longer parses (its runs cannot be checked), when ``console`` is given. With
    ``parse="never"`` rows without a cached parse are not checked (``unchecked_note`` says so)."""
    done = [(run, record) for run, record in records if status_of(record) in DONE]
    first: dict[str, Run] = {}
    for run, _ in done:
        first.setdefault(run.row.id, run)
    configs: dict[str, dict[str, Any]] = {}
    for run in first.values():
        try:
            configs |= check_configs(spec, [run], parse)
        except SpecError as err:
            if console is not None:
                console.print(f"warning: {err}; its records cannot be checked", style="yellow", markup=False)
    warning = code_warning(spec.name, done, code_changes(spec.root, done))
    if console is not None and warning:
        console.print(warning, style="yellow", soft_wrap=True, markup=False)
    unset: dict[tuple[str, tuple[str, ...]], dict[str, Any] | None] = {}

    def without(run: Run, keys: list[str]) -> dict[str, Any] | None:
        key = (run.row.id, tuple(sorted(keys)))
        if key not in unset:
            unset[key] = resolve_without(first[run.row.id], keys, parse)
        return unset[key]

    return stale_runs(done, configs, without, model_defaults(configs, parse)[0])


def unchecked_note(spec: TableSpec, rows: list[str]) -> str:
    """What a dry-run without a cached parse of ``rows`` did not check, and how to check it."""
    return (f"{len(rows)} row(s) not checked ({', '.join(rows[:4])}{', ...' if len(rows) > 4 else ''}): no cached "
            f"parse of their inputs (first look at them here, or their config files, the code or the libraries "
            f"changed since). Config errors in them (unknown keys, bad values) and stale records are found before "
            f"anything trains, or now with `repro reproduce {spec.name} --dry-run --check-configs` (imports "
            f"Lightning: 10-30 s, then cached).")
