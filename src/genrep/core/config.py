"""Typed configs: plain dataclasses, filled from YAML files and ``key=value`` overrides.

A config is any (nested) dataclass. :func:`load_config` reads a YAML file, applies dotted
overrides such as ``train.lr=3e-4`` and converts every value to the field's declared type.
Unknown keys and wrong types raise :class:`~genrep.core.errors.ConfigError` with one line that
names the file (or the CLI flag, or ``--set``) and the dotted key. Nothing is instantiated from
strings: a config holds data only.

Numbers are checked where they enter: every float must be finite (``nan`` and ``inf`` are refused),
and a field annotated with a bound (:data:`Count`, :data:`NonNegInt`, :data:`Positive`,
:data:`NonNeg`, :data:`Fraction` or any ``Annotated[T, Bounds(...)]``) refuses values outside it,
naming the option, the bound and the value.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, TypeVar, Union

import yaml

from genrep.core.errors import ConfigError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Bounds:
    """Inclusive (``ge``, ``le``) or exclusive (``gt``, ``lt``) limits of a numeric config field."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def violation(self, value: float) -> str | None:
        """``"must be >= 1"`` for a value outside the bounds, else None."""
        for op, bound, ok in (
            (">=", self.ge, lambda v, b: v >= b),
            (">", self.gt, lambda v, b: v > b),
            ("<=", self.le, lambda v, b: v <= b),
            ("<", self.lt, lambda v, b: v < b),
        ):
            if bound is not None and not ok(value, bound):
                return f"must be {op} {bound:g}"
        return None


Count = Annotated[int, Bounds(ge=1)]  # sizes, steps, limits, intervals: at least 1
NonNegInt = Annotated[int, Bounds(ge=0)]  # 0 has a meaning (off, all, none)
Positive = Annotated[float, Bounds(gt=0)]  # learning rates, softmax temperatures, timeouts
NonNeg = Annotated[float, Bounds(ge=0)]  # loss weights, noise levels, sampling temperatures
Fraction = Annotated[float, Bounds(ge=0, le=1)]  # decays, dropout probabilities, shares, times in [0, 1]


def _where(source: str, key: str) -> str:
    """How an error names a value: ``file.yaml: key``, ``--set key`` or ``--flag``."""
    if not source:
        return key
    if source == "--set":
        return f"--set {key}"
    return f"{source}: {key}"


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, key: str, source: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise a one-line ConfigError."""
    if tp is Any:
        return value
    if typing.get_origin(tp) is Annotated:
        return _convert_annotated(tp, value, key, source)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise _mismatch(tp, value, key, source, f"a mapping for {tp.__name__}")
        return from_dict(tp, value, source=source, prefix=key)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return _convert_union(tp, args, value, key, source)
    if origin is Literal:
        if value in args:
            return value
        raise _mismatch(tp, value, key, source, "one of " + ", ".join(repr(a) for a in args))
    if origin in (list, typing.List, tuple, typing.Tuple, dict, typing.Dict):
        return _convert_collection(tp, origin, args, value, key, source)
    if tp in (bool, int, float, str, Path):
        return _convert_scalar(tp, value, key, source)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _mismatch(tp, value, key, source)


def _mismatch(tp: Any, value: Any, key: str, source: str, expected: str | None = None) -> ConfigError:
    """The error for ``value`` that is not ``expected`` (default: the name of ``tp``)."""
    want = expected or _type_name(tp)
    return ConfigError(f"{_where(source, key)}: expected {want}, got {value!r}")


def _convert_annotated(tp: Any, value: Any, key: str, source: str) -> Any:
    """``Annotated[X, Bounds(...)]``: ``value`` as an X, then checked against the bounds."""
    base, *extras = typing.get_args(tp)
    out = _convert(base, value, key, source)
    for bound in extras:
        if isinstance(bound, Bounds) and out is not None:
            problem = bound.violation(out)
            if problem:
                raise ConfigError(f"{_where(source, key)}: {problem}, got {value!r}")
    return out


def _convert_union(tp: Any, args: tuple, value: Any, key: str, source: str) -> Any:
    """The first alternative of a union that ``value`` converts to (None for an Optional's None)."""
    if value is None and type(None) in args:
        return None
    errors = []
    options = [a for a in args if a is not type(None)]
    for arg in options:
        try:
            return _convert(arg, value, key, source)
        except ConfigError as err:
            errors.append(err)
    if len(options) == 1:  # Optional[X]: X's own message (a bound, say) is the clearest
        raise errors[0]
    raise _mismatch(tp, value, key, source)


def _convert_collection(tp: Any, origin: Any, args: tuple, value: Any, key: str, source: str) -> Any:
    """A list, tuple (``tuple[X, ...]`` or fixed length) or dict, converted item by item."""
    if origin in (list, typing.List):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise _mismatch(tp, value, key, source)
        (item,) = args or (Any,)
        return [_convert(item, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin in (tuple, typing.Tuple):
        if not isinstance(value, (list, tuple)):
            raise _mismatch(tp, value, key, source)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]", source) for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise _mismatch(tp, value, key, source, f"{len(args)} items")
        return tuple(_convert(a, v, f"{key}[{i}]", source) for i, (a, v) in enumerate(zip(args, value)))
    if not isinstance(value, dict):
        raise _mismatch(tp, value, key, source)
    kt, vt = args or (Any, Any)
    return {_convert(kt, k, key, source): _convert(vt, v, f"{key}.{k}", source) for k, v in value.items()}


def _convert_scalar(tp: type, value: Any, key: str, source: str) -> Any:
    """bool, int (an integral float too), float (a numeric string too; finite), str (a number too), Path."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _mismatch(tp, value, key, source, "true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _mismatch(tp, value, key, source, "an integer")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML reads "1e-4" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise _mismatch(tp, value, key, source, "a number")
        if not math.isfinite(number):
            raise ConfigError(f"{_where(source, key)}: must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _mismatch(tp, value, key, source, "a string")
    if isinstance(value, (str, Path)):
        return Path(value)
    raise _mismatch(tp, value, key, source, "a path")


def from_dict(
    cls: type[T], data: dict, *, source: str = "config", prefix: str = "", key_sources: dict[str, str] | None = None
) -> T:
    """Build dataclass ``cls`` from a mapping, checking keys, types and bounds.

    ``key_sources`` maps a top-level key to where its value came from (``"--set"`` or ``"--flag"``),
    so that an error names the option the user typed; other keys are named after ``source``.
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]  # T is a dataclass
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        raise ConfigError(f"{source}: unknown key '{where}' (known: {', '.join(sorted(fields)) or 'none'})")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        origin = (key_sources or {}).get(name)
        if origin is None:
            kwargs[name] = _convert(hints[name], value, key, source)
        elif origin == "--set":
            kwargs[name] = _convert(hints[name], value, key, "--set")
        else:  # a CLI flag: the flag names the value
            kwargs[name] = _convert(hints[name], value, origin, "")
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        where = f"{prefix}.{missing[0]}" if prefix else missing[0]
        raise ConfigError(f"{source}: missing required key '{where}'")
    return cls(**kwargs)


def to_dict(cfg: Any) -> Any:
    """A YAML-friendly plain structure (paths as strings, tuples as lists)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=3e-4"`` -> (["train", "lr"], 3e-4); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected KEY=VALUE")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _set_dotted(data: dict, path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override: '{part}' is not a section")
        node = child
    node[path[-1]] = value


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing or malformed file is a one-line ConfigError."""
    from genrep.core.files import read_text

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = read_text(path, "config file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def merge_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Apply ``key=value`` strings (dotted keys) onto a nested mapping, in order."""
    for text in overrides:
        path, value = parse_override(text)
        _set_dotted(data, path, value)
    return data


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    flags: dict | None = None,
    base: Any = None,
) -> T:
    """The dataclass defaults (or ``base``, an instance such as a named profile), then the YAML file,
    then CLI flags, then ``key=value`` overrides.

    Later sources win; every key is checked against the dataclass fields.
    """
    data: dict = to_dict(base) if base is not None else {}
    source = "config"
    key_sources: dict[str, str] = {}
    if path is not None:
        data = _deep_merge(data, read_yaml(path))
        source = str(path)
    if flags:
        data = _deep_merge(data, flags)
        key_sources.update({k: "--" + k.replace("_", "-") for k in flags})
    overrides = list(overrides)
    merge_overrides(data, overrides)
    key_sources.update({parse_override(o)[0][0]: "--set" for o in overrides})
    return from_dict(cls, data, source=source, key_sources=key_sources)


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def require_positive(cfg: Any, names: Iterable[str], command: str) -> None:
    """One-line ConfigError for the first of ``names`` whose value is not > 0."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value <= 0:
            raise ConfigError(f"{command}: {name} must be positive, got {value}")


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)
