"""How a config section is declared and read.

A section is a msgspec Struct (`Section`) beside the component it configures: its fields
are its keys, each default written once on the field, limits as `Annotated[..., Meta(...)]`
and choices as `Literal`. Checks that need more than one field go in `__post_init__`,
which raises `FieldError` naming the key, relative to the section. `read` turns a parsed
YAML mapping into the Struct and every problem into a `ConfigError` that names the key
path (`providers.openai.timeouts.connect`), the file and line it came from (the YAML
nodes keep their marks), and, for a misspelt key or choice, what was probably meant.

Leniency kept from hand-written parsing: a key given no value (`server:`) takes its
default, and a number where text is expected (`api_version: 2024-10-21`) is read as text.
"""

from __future__ import annotations

import io
import os
import re
import types
import typing
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union

import msgspec
import yaml

from gateway.errors import ConfigError

Key = tuple[str | int, ...]  # a path into the document: mapping keys and list indices
T = TypeVar("T")


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A config section, or a part of one. `keyed` names the fields written in YAML as a
    mapping of name to entry (`experiments: {name: {...}}`) and held as a tuple of entries
    whose `name` field is that key."""

    keyed: ClassVar[tuple[str, ...]] = ()


class FieldError(ValueError):
    """A section's own check failed: `key` is relative to the section ("" for the section
    itself, `trusted_proxies[1]`, `keys[0].id`); `hint` what was probably meant."""

    def __init__(self, key: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.key, self.message, self.hint = key, message, hint


def one_of(choices: typing.Iterable[str], value: str, key: str) -> None:
    """FieldError unless `value` is one of `choices` (a registry known only at run time)."""
    options = list(choices)
    if value not in options:
        raise FieldError(
            key, f"must be one of {', '.join(options)}; got {value!r}", close(value, options)
        )


def close(word: str, options: typing.Iterable[str]) -> str:
    """The option `word` was probably meant to be (a typo), or ""."""
    import difflib  # only when there is an error to explain

    found = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return found[0] if found else ""


# Limits used by many sections: numbers are never negative unless a section says so.
Count = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
Amount = Annotated[float, msgspec.Meta(ge=0)]

# Keys whose values are secrets: an error about them never shows the value.
SECRET_KEYS = frozenset({"key", "api_key", "password", "hash", "token", "secret"})


class Instant(datetime):
    """A point in time in the config: ISO 8601 text, a YAML date or timestamp; naive is UTC."""


# -- where a key came from -------------------------------------------------------------------
class Source:
    """The YAML nodes of a config file, for the line a key path came from."""

    def __init__(self, name: str, root: yaml.Node | None) -> None:
        self.name, self.root = name, root

    def where(self, path: Key) -> str:
        node = self.root
        for seg in path:
            inner = _child(node, seg)
            if inner is None:
                break
            node = inner
        if node is None:
            return self.name
        return f"{self.name}, line {node.start_mark.line + 1}"


def _child(node: yaml.Node | None, seg: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == str(seg):
                return v  # type: ignore[no-any-return]
    elif isinstance(node, yaml.SequenceNode) and isinstance(seg, int) and seg < len(node.value):
        return node.value[seg]  # type: ignore[no-any-return]
    return None


def load_yaml(path: str | os.PathLike[str]) -> tuple[Any, Source]:
    """A YAML file's data, and its nodes for locating keys."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError("--config", f"cannot read {p}: {e.strerror}") from e
    stream = io.StringIO(text)
    stream.name = str(p)  # marks name the file, not "<unicode string>"
    loader = yaml.SafeLoader(stream)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f"{p}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(p)
        what = e.problem or e.context or "unreadable"
        raise ConfigError("--config", f"{p} is not valid YAML: {what}", at) from None
    except yaml.YAMLError as e:
        raise ConfigError("--config", f"{p} is not valid YAML: {e}") from None
    finally:
        loader.dispose()
    return data, Source(str(p), node)


# -- ${ENV} ----------------------------------------------------------------------------------
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str], path: Key = ()) -> Any:
    """`${VAR}` and `${VAR:-default}` replaced from `env` in every string."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise _PathError(path, f"environment variable {name} is not set")

        return _ENV_RE.sub(sub, value)
    if isinstance(value, dict):
        return {k: interpolate(v, env, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, (*path, i)) for i, v in enumerate(value)]
    return value


def interpolated(value: Any, env: dict[str, str], source: Source | None = None) -> Any:
    """`interpolate`, a missing variable a ConfigError naming the key and its line."""
    try:
        return interpolate(value, env)
    except _PathError as e:
        raise e.config_error(source) from None


class _PathError(Exception):
    def __init__(self, path: Key, message: str, hint: str = "") -> None:
        self.path, self.message, self.hint = path, message, hint

    def config_error(self, source: Source | None) -> ConfigError:
        where = source.where(self.path) if source is not None else ""
        return ConfigError(render(self.path) or "<root>", self.message, where, self.hint)


# -- reading ---------------------------------------------------------------------------------
def render(path: Key) -> str:
    """`("routes", 0, "provider")` as `routes[0].provider`."""
    out = ""
    for seg in path:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else str(seg))
    return out


def read(
    data: Any,
    cls: type[T],
    at: Key = (),
    source: Source | None = None,
    env: dict[str, str] | None = None,
) -> T:
    """`data` (a parsed YAML mapping) as a `cls`; every problem a ConfigError naming the
    key (under `at`), and its file and line when `source` has them. With `env`, `${VAR}`
    is replaced first."""
    try:
        if env is not None:
            data = interpolate(data, env, at)
        prepared = _prepare(data if data is not None else {}, cls, at)
        try:
            return msgspec.convert(prepared, cls, dec_hook=_dec_hook)
        except msgspec.ValidationError as e:
            raise _located(e, prepared, cls, at) from None
    except _PathError as e:
        raise e.config_error(source) from None


# Types msgspec does not read by itself (`Instant`, a section's own units), by type.
READERS: dict[type, Callable[[type, Any], Any]] = {}


def reader(*tps: type) -> Callable[[Callable[[type, Any], Any]], Callable[[type, Any], Any]]:
    """Registers `fn(type, value)` as the reader of config values of these types."""

    def register(fn: Callable[[type, Any], Any]) -> Callable[[type, Any], Any]:
        READERS.update(dict.fromkeys(tps, fn))
        return fn

    return register


def _dec_hook(tp: type, value: Any) -> Any:
    fn = READERS.get(tp)
    if fn is None:
        raise NotImplementedError(f"no reader for {tp!r}")
    return fn(tp, value)


@reader(Instant)
def _instant(tp: type, value: Any) -> Instant:
    t = value
    if isinstance(t, str):
        try:
            t = datetime.fromisoformat(t)
        except ValueError:
            t = None
    elif isinstance(t, date) and not isinstance(t, datetime):
        t = datetime(t.year, t.month, t.day)
    if not isinstance(t, datetime):
        raise ValueError(f"must be an ISO 8601 date or time, got {value!r}")
    t = t if t.tzinfo is not None else t.replace(tzinfo=UTC)
    return Instant.fromtimestamp(t.timestamp(), t.tzinfo)


def _strip(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _members(tp: Any) -> tuple[Any, ...]:
    """The types of a union (or the type itself)."""
    tp = _strip(tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        return tuple(_strip(a) for a in typing.get_args(tp))
    return (tp,)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _prepare(value: Any, tp: Any, at: Key) -> Any:
    """The data as msgspec reads it: empty keys dropped (their default applies), numbers
    where text is expected as text, keyed mappings as lists of named entries."""
    members = _members(tp)
    if isinstance(value, dict):
        struct = next((m for m in members if _is_struct(m)), None)
        if struct is not None:
            hints = _hints(struct)
            out = {}
            for k, v in value.items():
                if v is None:
                    continue  # `key:` with no value: the default
                if k in struct.keyed:
                    v = _named_entries(v, (*at, k))
                if k in hints:
                    v = _prepare(v, hints[k], (*at, k))
                out[k] = v
            return out
        mapping = next((m for m in members if typing.get_origin(m) is dict), None)
        if mapping is not None:
            _, vt = typing.get_args(mapping)
            return {str(k): _prepare(v, vt, (*at, str(k))) for k, v in value.items()}
        return value
    if isinstance(value, list):
        seq = next((m for m in members if typing.get_origin(m) in (list, tuple)), None)
        if seq is not None:
            item = typing.get_args(seq)[0]
            return [_prepare(v, item, (*at, i)) for i, v in enumerate(value)]
        return value
    if str in members and isinstance(value, int | float | date) and not isinstance(value, bool):
        return str(value)
    return value


def _named_entries(value: Any, at: Key) -> Any:
    if not isinstance(value, dict):
        raise _PathError(at, "must be a mapping of name to its declaration")
    out = []
    for name, entry in value.items():
        if isinstance(entry, dict):
            if "name" in entry:
                raise _PathError((*at, str(name), "name"), "unknown key (the name is the key)")
            entry = {"name": str(name), **entry}
        out.append(entry)
    return out


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_SEG = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_WHAT = {"int": "an integer", "float": "a number (float)", "bool": "true or false",
         "str": "a string", "object": "a mapping", "array": "a list", "null": "empty"}  # fmt: skip
_EXPECTED = re.compile(r"^Expected `(\w+)`(?:, got `(\w+)`|(?P<rule> .+))?$", re.S)


def _located(e: msgspec.ValidationError, data: Any, cls: type, at: Key) -> _PathError:
    m = _AT.match(str(e))
    assert m is not None
    message, raw_path = m.group("msg"), m.group("path") or ""
    path, value, tp, keyed = _walk(data, cls, raw_path, at)
    cause = e.__cause__
    hint = ""
    if isinstance(cause, FieldError):
        extra = tuple(_segments(cause.key))
        message, hint = cause.message, cause.hint
        return _PathError(_name_keyed(path + extra, keyed), message, hint)
    unknown = re.match(r"Object contains unknown field `([^`]*)`", message)
    missing = re.match(r"Object missing required field `([^`]*)`", message)
    enum = re.match(r"Invalid enum value (.*)", message)
    expected = _EXPECTED.match(message)
    shown = "(not shown: a secret)" if path and path[-1] in SECRET_KEYS else repr(value)
    if unknown:
        path += (unknown.group(1),)
        struct = next((s for s in _members(tp) if _is_struct(s)), None)
        message, hint = "unknown key", close(unknown.group(1), _hints(struct) if struct else ())
    elif missing:
        path += (missing.group(1),)
        message = "is required"
    elif enum:
        choices = [a for member in _members(tp) if typing.get_origin(member) is Literal
                   for a in typing.get_args(member)]  # fmt: skip
        message = f"must be one of {', '.join(map(str, choices))}; got {shown}"
        hint = close(str(value), map(str, choices))
    elif expected:
        want, rule = expected.group(1), expected.group("rule")
        if rule:
            message = f"must be {rule.strip()}, got {shown}"
        else:
            message = f"must be {_WHAT.get(want, want)}, got {shown}"
    else:
        message = message[:1].lower() + message[1:]
    return _PathError(_name_keyed(path, keyed), message, hint)


def _segments(key: str) -> typing.Iterator[str | int]:
    for part in filter(None, re.split(r"\.(?![^\[]*\])", key)):
        name, *indices = part.split("[")
        if name:
            yield name
        for i in indices:
            yield int(i.rstrip("]"))


def _walk(data: Any, cls: type, raw: str, at: Key) -> tuple[Key, Any, Any, dict[Key, list[str]]]:
    """msgspec's `$.a[0][...].b` as a key path under `at`, the value found there, its
    declared type, and the keyed lists met on the way (their entries' names)."""
    path: list[str | int] = list(at)
    value, tp = data, cls
    keyed: dict[Key, list[str]] = {}
    for m in _SEG.finditer(raw):
        name, index = m.group(1), m.group(2)
        struct = next((s for s in _members(tp) if _is_struct(s)), None)
        if name is not None:
            if struct is not None and name in struct.keyed and isinstance(value, dict):
                entries = value.get(name)
                if isinstance(entries, list):
                    keyed[(*path, name)] = [str(x.get("name")) for x in entries
                                            if isinstance(x, dict)]  # fmt: skip
            tp = _hints(struct).get(name, Any) if struct is not None else Any
            value = value.get(name) if isinstance(value, dict) else None
            path.append(name)
        elif index == "...":
            mapping = next((s for s in _members(tp) if typing.get_origin(s) is dict), None)
            vt = typing.get_args(mapping)[1] if mapping is not None else Any
            key = _failing_key(value, vt)
            value = value.get(key) if isinstance(value, dict) else None
            tp = vt
            path.append(key)
        else:
            i = int(index)
            seq = next((s for s in _members(tp) if typing.get_origin(s) in (list, tuple)), None)
            tp = typing.get_args(seq)[0] if seq is not None else Any
            value = value[i] if isinstance(value, list) and i < len(value) else None
            path.append(i)
    return tuple(path), value, tp, keyed


def _failing_key(mapping: Any, value_type: Any) -> str:
    """msgspec names no mapping key in its paths: the first entry that fails alone."""
    if isinstance(mapping, dict):
        for k, v in mapping.items():
            try:
                msgspec.convert(v, value_type, dec_hook=_dec_hook)
            except msgspec.ValidationError:
                return str(k)
    return "..."


def _name_keyed(path: Key, keyed: dict[Key, list[str]]) -> Key:
    """An entry of a keyed list named by its key: `experiments[0].unit` as
    `experiments.x.unit` (its own `name` is the key itself)."""
    for base, names in keyed.items():
        n = len(base)
        i = path[n] if path[:n] == base and len(path) > n else None
        if isinstance(i, int) and i < len(names):
            rest = path[n + 1 :]
            if rest[:1] == ("name",):
                rest = rest[1:]
            return (*base, names[i], *rest)
    return path
