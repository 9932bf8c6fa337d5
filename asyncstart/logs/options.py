"""The json-file driver's ``--log-opt``s: checked at create, applied by the writer.

dockerd checks only the option *names* at create (``ValidateLogOpt``) and their values when the
logger starts (``jsonfilelog.New``), so a bad ``max-size`` fails the start. Here both are
checked at create, with dockerd's messages, so nothing is made for a container that cannot
start; an option this engine does not apply (``compress=true``, ``mode=non-blocking``) is
refused there too, never accepted and ignored.

Pure: no I/O but the host's name, read when a container's ``tag`` asks for it.
"""

from __future__ import annotations

import functools
import json
import math
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .. import errors
from ..config import not_applied

__all__ = ["LogOptions", "LogSource", "check_log_options", "from_human_size", "log_options"]

_INT64_MAX = 2**63 - 1
#: Options every driver takes (``logger.builtInLogOpts`` and the dual-logging cache's). The
#: cache only serves drivers that cannot be read back, never json-file: dockerd accepts them
#: and they ask nothing of it.
_BUILT_IN = ("mode", "max-buffer-size", "cache-disabled", "cache-max-size", "cache-max-file")
_BUILT_IN_CACHE = ("cache-compress",)
#: ``logger.Info``'s extra attributes, common to the drivers that write metadata.
_ATTRIBUTE_OPTS = ("env", "env-regex", "labels", "labels-regex", "tag")
#: Those that give an entry attributes (the regex ones are refused: not_applied).
_ATTRIBUTE_SOURCES = ("env", "labels", "tag")
_JSON_FILE_OPTS = ("max-file", "max-size", "compress")
#: The longest part of a client's value quoted back in a message.
_ECHO = 100

#: Go's ``strconv.ParseFloat`` syntax (decimal and hexadecimal, no underscores).
_GO_FLOAT = re.compile(
    r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
    r"|0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?\d+)"
)
_GO_INT = re.compile(r"[+-]?[0-9]+")
_GO_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}
#: ``{{.Field}}`` actions of a ``tag`` template (the fields of dockerd's ``logger.Info``).
_ACTION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_FIELD = re.compile(r"\s*\.(\w+)\s*")
_TAG_FIELDS = (
    "ID", "FullID", "Name", "Command", "ImageID", "ImageFullID", "ImageName", "Hostname",
    "DaemonName",
)  # fmt: skip


def _echo(value: str) -> str:
    """``value`` quoted as Go's ``%q`` does, cut short (a hostile value is not sent back)."""
    return json.dumps(value[:_ECHO], ensure_ascii=False)


def _parse_float(text: str) -> float:
    if not _GO_FLOAT.fullmatch(text):
        raise ValueError(f"strconv.ParseFloat: parsing {_echo(text)}: invalid syntax")
    number = float.fromhex(text) if "x" in text.lower() else float(text)
    if math.isinf(number):
        raise ValueError(f"strconv.ParseFloat: parsing {_echo(text)}: value out of range")
    return number


def from_human_size(text: str) -> int:
    """go-units' ``FromHumanSize``, as json-file reads ``max-size``: decimal units ("10m" is
    10,000,000 bytes; "k", "kb", "m", "mb"..., any case), a fraction allowed ("1.5k"). Raises
    ``ValueError`` with go-units' message. A size beyond int64 is negative, as Go's conversion
    gives it on amd64."""
    sep = max(text.rfind(c) for c in "0123456789. ")
    if sep == -1:
        raise ValueError(f"invalid size: '{text[:_ECHO]}'")
    number, suffix = (text[: sep + 1], text[sep + 1 :])
    if text[sep] == " ":
        number = text[:sep]
    size = _parse_float(number)
    if size < 0:
        raise ValueError(f"invalid size: '{text[:_ECHO]}'")
    if suffix:
        lowered = suffix.lower()
        if len(suffix) > 3:
            raise ValueError(f"invalid suffix: '{suffix[:_ECHO]}'")
        if lowered[0] == "b":
            if len(lowered) > 1:
                raise ValueError(f"invalid suffix: '{lowered}'")
        elif (
            lowered[0] not in _DECIMAL
            or (len(lowered) == 2 and lowered[1] != "b")
            or (len(lowered) == 3 and lowered[1:] != "ib")
        ):
            raise ValueError(f"invalid suffix: '{lowered}'")
        else:
            size *= _DECIMAL[lowered[0]]
    return int(size) if size <= _INT64_MAX else -(2**63)


def _atoi(text: str) -> int:
    if not _GO_INT.fullmatch(text):
        raise ValueError(f"strconv.Atoi: parsing {_echo(text)}: invalid syntax")
    number = int(text)
    if not -(2**63) <= number <= _INT64_MAX:
        raise ValueError(f"strconv.Atoi: parsing {_echo(text)}: value out of range")
    return number


def _parse_bool(text: str) -> bool:
    if text not in _GO_BOOLS:
        raise ValueError(f"strconv.ParseBool: parsing {_echo(text)}: invalid syntax")
    return _GO_BOOLS[text]


def _tag_parts(template: str) -> list[tuple[str, str]]:
    """A ``tag`` split into ``("text", ...)`` and ``("field", name)``; ``ValueError`` for what
    this engine does not render (functions, pipelines, comments: dockerd's Go templates)."""
    parts: list[tuple[str, str]] = []
    at = 0
    for action in _ACTION.finditer(template):
        parts.append(("text", template[at : action.start()]))
        name = _FIELD.fullmatch(action.group(1))
        if name is None or name.group(1) not in _TAG_FIELDS:
            raise ValueError(action.group(0))
        parts.append(("field", name.group(1)))
        at = action.end()
    rest = template[at:]
    if "{{" in rest:
        raise ValueError(rest)
    parts.append(("text", rest))
    return parts


@dataclass(frozen=True, slots=True)
class LogOptions:
    """What the json-file writer is to do for one container."""

    #: Rotate once the current file holds this many bytes (-1: never).
    max_size: int = -1
    #: Files kept in all, the current one included (``<id>-json.log``, ``.1``, ...).
    max_file: int = 1
    #: The ``attrs`` object written into every entry (labels, env, tag); empty: none.
    attrs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LogSource:
    """The container as dockerd's ``logger.Info`` shows it to ``labels``/``env``/``tag``."""

    id: str
    name: str
    image_id: str = ""
    image_name: str = ""
    command: Sequence[str] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Sequence[str] = ()


def check_log_options(config: Mapping[str, str]) -> LogOptions:
    """``HostConfig.LogConfig.Config`` for json-file: dockerd's 400 for a bad one (its checks'
    order: logging mode, buffer size, cache, option names, then ``max-size``, ``max-file``,
    ``compress``, ``tag``); the rotation it asks for otherwise (no attributes yet: they come from
    the container at its start, :func:`log_options`)."""
    try:
        return _checked(tuple(sorted(config.items())))
    except ValueError as exc:
        raise errors.InvalidParameter(str(exc)) from None


@functools.cache
def _checked(items: tuple[tuple[str, str], ...]) -> LogOptions:
    """Checked once per distinct configuration (at create, then at every start)."""
    return _check(dict(items))


def _check(config: Mapping[str, str]) -> LogOptions:
    mode = config.get("mode", "")
    if mode not in ("", "blocking", "non-blocking"):
        raise ValueError(f"logger: logging mode not supported: {mode[:_ECHO]}")
    if "max-buffer-size" in config and mode != "non-blocking":
        raise ValueError(
            "logger: max-buffer-size option is only supported with 'mode=non-blocking'"
        )
    if config.get("cache-disabled", "") not in ("", *_GO_BOOLS):
        value = config["cache-disabled"][:_ECHO]
        raise ValueError(f"invalid value for option cache-disabled: {value}")
    for key in config:
        if key not in (*_BUILT_IN, *_BUILT_IN_CACHE, *_ATTRIBUTE_OPTS, *_JSON_FILE_OPTS):
            raise ValueError(f"unknown log opt '{key[:_ECHO]}' for json-file log driver")
    max_size = -1
    if "max-size" in config:
        max_size = from_human_size(config["max-size"])
        if max_size <= 0:
            raise ValueError("max-size must be a positive number")
    max_file = 1
    if "max-file" in config:
        max_file = _atoi(config["max-file"])
        if max_file < 1:
            raise ValueError("max-file cannot be less than 1")
    if "compress" in config and _parse_bool(config["compress"]):
        if max_file == 1 or max_size == -1:
            raise ValueError(
                "compress cannot be true when max-file is less than 2 or max-size is not set"
            )
        # Rotated files would be gzipped, and `docker logs` would have to read them back.
        raise not_applied("HostConfig.LogConfig.Config", "compress", config["compress"])
    if mode == "non-blocking":
        # A ring buffer that drops output when the log cannot keep up: output is never dropped.
        raise not_applied("HostConfig.LogConfig.Config", "mode", mode)
    for key in ("labels-regex", "env-regex"):
        if config.get(key):
            try:
                re.compile(config[key])
            except re.error as exc:
                raise ValueError(f"error parsing regexp: {exc}: `{config[key][:_ECHO]}`") from None
            # dockerd matches with RE2, in linear time; Python's engine backtracks, and a
            # client's pattern against a client's names could hold the daemon for minutes.
            raise not_applied("HostConfig.LogConfig.Config", key, config[key])
    if config.get("tag"):
        try:
            _tag_parts(config["tag"])
        except ValueError as exc:
            raise errors.InvalidParameter(
                f"asyncstart renders log tags made of text and {{{{.Field}}}} actions "
                f"({', '.join(_TAG_FIELDS)}) only, not {_echo(str(exc))}"
            ) from None
    return LogOptions(max_size=max_size, max_file=max_file)


def _tag(template: str, source: LogSource) -> str:
    values = {
        "ID": source.id[:12],
        "FullID": source.id,
        "Name": source.name.lstrip("/"),
        "Command": " ".join(source.command),
        "ImageID": source.image_id.split(":", 1)[-1][:12],
        "ImageFullID": source.image_id,
        "ImageName": source.image_name,
        "DaemonName": "docker",
    }
    out = []
    for kind, value in _tag_parts(template):
        if kind == "text":
            out.append(value)
        elif value == "Hostname":
            out.append(socket.gethostname())
        else:
            out.append(values[value])
    return "".join(out)


def _attributes(config: Mapping[str, str], source: LogSource) -> dict[str, str]:
    """dockerd's ``Info.ExtraAttributes`` and ``tag``: what every entry's ``attrs`` holds."""
    extra: dict[str, str] = {}
    for name in filter(None, config.get("labels", "").split(",")):
        if name in source.labels:
            extra[name] = source.labels[name]
    env = dict(item.split("=", 1) for item in source.env if "=" in item)
    for name in filter(None, config.get("env", "").split(",")):
        if name in env:
            extra[name] = env[name]
    if config.get("tag"):
        tag = _tag(config["tag"], source)
        if tag:
            extra["tag"] = tag
    return dict(sorted(extra.items()))  # Go writes a map's keys sorted


def log_options(config: Mapping[str, str], source: Callable[[], LogSource]) -> LogOptions:
    """The options of a container about to start: rotation, and the attributes its entries
    carry (``labels``, ``env``, ``tag`` rendered now, as dockerd does when the logger starts,
    from the container ``source()`` describes: asked only if an option names one)."""
    checked = check_log_options(config)
    if not any(config.get(key) for key in _ATTRIBUTE_SOURCES):
        return checked  # (no attributes: the common case, at every start)
    return LogOptions(checked.max_size, checked.max_file, _attributes(config, source()))
