"""The default a setting of a resolved ``repro fit`` config takes when it is not set: the constructor default of the
class the nearest ``class_path`` above it names (looked up the MRO past ``**kwargs``), then, for a deeper key, that
default's attributes or items (``model.init_args.generator.init_args.init.conv_truncation``: the ``init`` argument's
default ``Init()``, its ``conv_truncation``). A checkpoint or record written before a parameter existed lacks the key;
it ran that default. Light: a class is imported only when asked for."""
from __future__ import annotations

import importlib
import inspect
from typing import Any

__all__ = ["UNKNOWN", "setting_default"]

UNKNOWN: Any = object()  # no default found
_PLAIN = (type(None), bool, int, float, str)


def _init_default(class_path: str, name: str) -> Any:
    module, _, attr = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        return UNKNOWN
    for klass in getattr(cls, "__mro__", ()):
        if "__init__" not in vars(klass):
            continue
        try:
            param = inspect.signature(klass.__init__).parameters.get(name)
        except (TypeError, ValueError):
            return UNKNOWN
        if param is not None:
            return UNKNOWN if param.default is inspect.Parameter.empty else param.default
    return UNKNOWN


def setting_default(config: dict[str, Any], key: str) -> Any:
    """The default of the dotted ``key`` of the nested ``config`` (which holds it), if it is plain data (None, bools,
    numbers, strings, and lists, tuples (as lists) and string-keyed dicts of them); ``UNKNOWN`` otherwise or where
    none is found (a key outside any class's ``init_args``, a required parameter, a class that does not import)."""
    parts, node = key.split("."), config
    owner, rest = None, []
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            return UNKNOWN
        if part == "init_args" and isinstance(node.get("class_path"), str):
            owner, rest = node["class_path"], parts[i + 1:]
        node = node[part]
    if owner is None or not rest:
        return UNKNOWN
    value = _init_default(owner, rest[0])
    for part in rest[1:]:
        if value is UNKNOWN:
            return UNKNOWN
        value = value.get(part, UNKNOWN) if isinstance(value, dict) else getattr(value, part, UNKNOWN)
    return _data(value)


def _data(value: Any) -> Any:
    """``value`` as plain data (tuples as lists), or ``UNKNOWN`` if it holds anything else."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)):
        items = [_data(v) for v in value]
        return UNKNOWN if any(v is UNKNOWN for v in items) else items
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items = {k: _data(v) for k, v in value.items()}
        return UNKNOWN if any(v is UNKNOWN for v in items.values()) else items
    return UNKNOWN
