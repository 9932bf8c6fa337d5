"""``--change`` lines of ``docker commit`` and ``docker import``: Dockerfile instructions applied to
a container config (Docker's keys), as dockerd's ``dockerfile.BuildFromConfig`` does.

Allowed, as dockerd allows them: ``CMD``, ``ENTRYPOINT``, ``ENV``, ``EXPOSE``, ``HEALTHCHECK``,
``LABEL``, ``ONBUILD``, ``STOPSIGNAL``, ``USER``, ``VOLUME``, ``WORKDIR``; any other is
``<instr> is not a valid change command`` (400). The lines are one Dockerfile (joined with
newlines: comments and ``\\`` continuations work), parsed whole before any is applied, with
buildkit's word rules (quotes, escapes) and variable expansion against the config's ``Env`` as
it is before each instruction (``ENV PATH=$PATH:/x``).

Not reproduced: parser directives (``# escape=```), heredocs, ``${var/pattern/repl}``.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from .. import errors
from ..signals import parse_signal

__all__ = ["ALLOWED", "apply_changes"]

#: The instructions a change may be (dockerd's ``validCommitCommands``).
ALLOWED = frozenset({"cmd", "entrypoint", "env", "expose", "healthcheck", "label", "onbuild",
                     "stopsignal", "user", "volume", "workdir"})  # fmt: skip
_DEFAULT_SHELL = ["/bin/sh", "-c"]
_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_CONTINUATION = re.compile(r"([^\\])\\[ \t]*$|^\\[ \t]*$")
_ONBUILD = re.compile(r"(?i)^\s*ONBUILD\s*")
_HEALTH_FLAGS = ("interval", "timeout", "start-period", "start-interval", "retries")
_HEALTH_DURATIONS = (
    ("interval", "Interval"),
    ("timeout", "Timeout"),
    ("start-period", "StartPeriod"),
    ("start-interval", "StartInterval"),
)


def _bad(message: str) -> errors.InvalidParameter:
    return errors.InvalidParameter(message)


def _quote(text: str) -> str:
    """Go's ``%q`` of a plain string."""
    return json.dumps(text, ensure_ascii=False)


@dataclass
class _Instruction:
    name: str  # as written
    flags: list[str]
    args: list[str]
    original: str
    json: bool = False
    kvs: list[tuple[str, str]] = field(default_factory=list)


# -- parsing (buildkit's parser, then its instructions) ----------------------------------------


def _lines(text: str) -> Iterable[str]:
    """Logical lines: comments and blank lines dropped, ``\\`` continuations joined."""
    pending: list[str] | None = None
    for raw in text.split("\n"):
        line = raw.rstrip("\r")
        if line.lstrip().startswith("#"):
            continue
        if pending is not None and not line.strip():
            continue  # an empty continuation line
        joined, continues = _CONTINUATION.sub(r"\1", line), bool(_CONTINUATION.search(line))
        if pending is None:
            if not continues and not joined.strip():
                continue
            pending = []
        pending.append(joined)
        if not continues:
            yield "".join(pending)
            pending = None
    if pending is not None:
        yield "".join(pending)


def _flags(rest: str) -> tuple[list[str], str]:
    """The leading ``--flag[=value]`` words (buildkit's ``extractBuilderFlags``, simplified to
    unquoted values), and what follows them."""
    flags: list[str] = []
    while rest.startswith("--"):
        word, _, after = rest.partition(" ")
        if word == "--":
            return flags, after.strip()
        flags.append(word)
        rest = after.lstrip()
    return flags, rest


def _words(rest: str) -> list[str]:
    """buildkit's ``parseWords``: split on blanks outside quotes, quotes and escapes kept."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    blank_ok = False
    i = 0
    while i < len(rest):
        ch = rest[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == "\\" and quote != "'":
                if i + 1 == len(rest):
                    break
                word.append(ch)
                i += 1
                ch = rest[i]
            word.append(ch)
        elif ch.isspace():
            if blank_ok or word:
                words.append("".join(word))
            word, blank_ok = [], False
        else:
            if ch in "'\"":
                quote, blank_ok = ch, True
            if ch == "\\":
                if i + 1 == len(rest):
                    break
                word.append(ch)
                i += 1
                ch = rest[i]
            word.append(ch)
        i += 1
    if blank_ok or word:
        words.append("".join(word))
    return words


def _name_values(rest: str, key: str) -> list[tuple[str, str]]:
    words = _words(rest)
    if not words:
        return []
    if "=" not in words[0]:  # the legacy ``ENV name value``
        parts = _WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise _bad(f"{key} must have two arguments")
        return [(parts[0], parts[1])]
    pairs = []
    for word in words:
        if "=" not in word:
            raise _bad(
                f"Syntax error - can't find = in {_quote(word)}. Must be of the form: name=value"
            )
        name, _, value = word.partition("=")
        pairs.append((name, value))
    return pairs


def _maybe_json(rest: str) -> tuple[list[str], bool]:
    if rest.startswith("["):
        try:
            value = json.loads(rest)
        except ValueError:
            value = None
        if isinstance(value, list):
            if not all(isinstance(item, str) for item in value):
                raise _bad("when using JSON array syntax, arrays must be comprised of strings only")
            return value, True
    return ([rest] if rest else []), False


def _split_first(text: str) -> tuple[str, str]:
    """The first blank-separated word and the rest (both stripped)."""
    parts = _WHITESPACE.split(text.strip(), maxsplit=1)
    return parts[0], (parts[1] if len(parts) > 1 else "")


def _parse(line: str) -> _Instruction:
    """One logical line as buildkit's parser reads it: the instruction as written, its
    leading flags and its arguments (per instruction: JSON or shell form, name=value pairs,
    blank-separated words, or the rest of the line as one)."""
    name, rest = _split_first(line)
    flags, rest = _flags(rest)
    kind = name.lower()
    instruction = _Instruction(name, flags, [], line)
    if kind in ("cmd", "entrypoint"):
        instruction.args, instruction.json = _maybe_json(rest)
    elif kind in ("env", "label"):
        instruction.kvs = _name_values(rest, kind.upper())
    elif kind == "expose":
        instruction.args = _WHITESPACE.split(rest) if rest else []
    elif kind == "volume":
        instruction.args, instruction.json = _maybe_json(rest)
        if not instruction.json:
            instruction.args = _WHITESPACE.split(rest) if rest else []
    elif kind == "healthcheck":
        kind_word, command = _split_first(rest)
        args, instruction.json = _maybe_json(command)
        instruction.args = [kind_word, *args] if kind_word else []
    elif kind == "onbuild":
        instruction.args = [_split_first(rest)[0]] if rest else []
    else:
        instruction.args = [rest] if rest else []
    return instruction


def _no_flags(instruction: _Instruction) -> None:
    if instruction.flags:
        raise _bad(f"unknown flag: {instruction.flags[0].partition('=')[0]}")


def _exactly_one(instruction: _Instruction) -> str:
    if len(instruction.args) != 1:
        raise _bad(f"{instruction.name.upper()} requires exactly one argument")
    _no_flags(instruction)
    return instruction.args[0]


def _at_least_one(instruction: _Instruction) -> None:
    if not instruction.args and not instruction.kvs:
        raise _bad(f"{instruction.name.upper()} requires at least one argument")


# -- expansion (buildkit's shell lexer) --------------------------------------------------------


class _Words:
    """buildkit's ``wordsStruct``: the words of an expansion (``EXPOSE $PORTS``)."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.word = ""
        self.in_word = False

    def char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word, self.in_word = "", False
        else:
            self.raw(ch)

    def raw(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def done(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word, self.in_word = "", False
        return self.words


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str]) -> None:
        self.text, self.pos, self.env = text, 0, env

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        self.pos += 1 if ch else 0
        return ch

    def process(self, stop: str = "", raw_escapes: bool = False) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        while ch := self.peek():
            if stop and ch == stop:
                self.next()
                return "".join(result), words.done()
            if ch == "$":
                text = self.dollar()
                for each in text:
                    words.char(each)
            elif ch in "'\"":
                text = self.single() if ch == "'" else self.double()
                words.raw(text)
            else:
                text = self.next()
                if text == "\\":
                    if raw_escapes:
                        words.raw(text)
                        result.append(text)
                    text = self.next()
                    if not text:
                        break
                    words.raw(text)
                else:
                    words.char(text)
            result.append(text)
        if stop:
            raise _bad(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.done()

    def single(self) -> str:
        self.next()
        result = []
        while (ch := self.next()) != "'":
            if not ch:
                raise _bad("unexpected end of statement while looking for matching single-quote")
            result.append(ch)
        return "".join(result)

    def double(self) -> str:
        self.next()
        result = []
        while (ch := self.peek()) != '"':
            if not ch:
                raise _bad("unexpected end of statement while looking for matching double-quote")
            if ch == "$":
                result.append(self.dollar())
                continue
            ch = self.next()
            if ch == "\\":
                if not self.peek():
                    continue
                if self.peek() in '"$\\':
                    ch = self.next()
            result.append(ch)
        self.next()
        return "".join(result)

    def name(self) -> str:
        ch = self.peek()
        if ch.isdigit():
            start = self.pos
            while self.peek().isdigit():
                self.next()
            return self.text[start : self.pos]
        if ch and ch in "@*#?-$!0":
            return self.next()
        start = self.pos
        while (ch := self.peek()) and (ch.isalnum() or ch == "_"):
            self.next()
        return self.text[start : self.pos]

    def dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self.name()
            return self.env.get(name, "") if name else "$"
        self.next()
        if not self.peek():
            raise _bad("syntax error: missing '}'")
        if self.peek() in "{}:":
            raise _bad("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "}":
            return self.env.get(name, "")
        if not ch:
            raise _bad("syntax error: missing '}'")
        modifier, null_is_unset = ch, ch == ":"
        if null_is_unset:
            ch = self.next()
            modifier += ch
        if not ch or ch not in "+-?#%" or (null_is_unset and ch in "#%"):
            raise _bad(f"unsupported modifier ({modifier}) in substitution")
        try:
            word, _ = self.process("}", raw_escapes=ch in "#%")
        except errors.InvalidParameter:
            if not self.peek():
                raise _bad("syntax error: missing '}'") from None
            raise
        value = self.env.get(name)
        unset = value is None or (null_is_unset and value == "")
        if ch == "-":
            return word if unset else str(value)
        if ch == "+":
            return "" if unset else word
        if ch == "?":
            if value is None:
                raise _bad(f"{name}: {word or 'is not allowed to be unset'}")
            if unset:
                raise _bad(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        return _trim(value or "", word, suffix=ch == "%")


def _trim(value: str, pattern: str, *, suffix: bool) -> str:
    """``${v#p}`` / ``${v##p}`` (prefix), ``${v%p}`` / ``${v%%p}`` (suffix): shortest match,
    longest when the operator is doubled."""
    greedy = pattern.startswith("%" if suffix else "#")
    pattern = pattern[1:] if greedy else pattern
    cuts = range(len(value) + 1)
    for cut in reversed(cuts) if greedy != suffix else cuts:
        part = value[cut:] if suffix else value[:cut]
        if fnmatch.fnmatchcase(part, pattern):
            return value[:cut] if suffix else value[cut:]
    return value


def _expand(word: str, env: Mapping[str, str]) -> str:
    return _Lexer(word, env).process()[0]


def _expand_words(word: str, env: Mapping[str, str]) -> list[str]:
    return _Lexer(word, env).process()[1]


# -- applying (dockerd's dispatchers, on a config with Docker's keys) -------------------------


def _env_of(config: Mapping[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in config.get("Env") or ():
        name, _, value = item.partition("=")
        env[name] = value
    return env


def _command(config: dict[str, Any], instruction: _Instruction, empty_as_nil: bool) -> Any:
    """The exec form as written; the shell form after the config's ``Shell`` (``/bin/sh -c``).
    ``ENTRYPOINT`` with no command is none (``null``), ``CMD`` with none is the shell alone."""
    _no_flags(instruction)
    args = instruction.args
    if not args and empty_as_nil:
        return None
    if instruction.json or not args:
        return list(args) if instruction.json else [*(config.get("Shell") or _DEFAULT_SHELL)]
    return [*(config.get("Shell") or _DEFAULT_SHELL), " ".join(args)]


def _ports(spec: str) -> list[str]:
    """dockerd's ``parsePortSpec`` for ``EXPOSE``: ``80``, ``80/udp``, ``8000-8010``, with an
    optional ``ip:host:`` part; the ``port/proto`` keys it exposes."""
    parts = spec.split(":")
    container = parts[-1]
    port, _, proto = container.partition("/")
    if not port:
        raise _bad(f"no port specified: {spec}<empty>")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise _bad(f"invalid proto: {proto}")
    low, dash, high = port.partition("-")
    try:
        start, end = int(low), int(high if dash else low)
    except ValueError:
        raise _bad(f"invalid containerPort: {port}") from None
    if not (0 <= start <= end <= 65535) or not low.isdigit() or (dash and not high.isdigit()):
        raise _bad(f"invalid containerPort: {port}")
    return [f"{number}/{proto}" for number in range(start, end + 1)]


_DURATION = re.compile(r"(\d*\.?\d*)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 1000, "µs": 1000, "μs": 1000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
          "h": 3600 * 10**9}  # fmt: skip


def _duration(text: str) -> int:
    """Go's ``time.ParseDuration``, in nanoseconds."""
    body = text.lstrip("+-")
    sign = -1 if text.startswith("-") else 1
    if body == "0":
        return 0
    total, pos = Decimal(0), 0
    while pos < len(body):
        match = _DURATION.match(body, pos)
        if not match or match.group(1) in ("", "."):
            if re.fullmatch(r"[\d.]+", body[pos:]):
                raise _bad(f"time: missing unit in duration {_quote(text)}")
            raise _bad(f"time: invalid duration {_quote(text)}")
        try:
            total += Decimal(match.group(1)) * _UNITS[match.group(2)]
        except InvalidOperation:
            raise _bad(f"time: invalid duration {_quote(text)}") from None
        pos = match.end()
    if not body:
        raise _bad(f"time: invalid duration {_quote(text)}")
    return sign * int(total)


def _healthcheck(instruction: _Instruction) -> dict[str, Any]:
    if not instruction.args:
        raise _bad("HEALTHCHECK requires at least one argument")
    kind, args = instruction.args[0].upper(), instruction.args[1:]
    if kind == "NONE":
        if args:
            raise _bad("HEALTHCHECK NONE takes no arguments")
        return {"Test": ["NONE"]}
    values: dict[str, str] = {}
    for flag in instruction.flags:
        name, eq, value = flag.partition("=")
        if name[2:] not in _HEALTH_FLAGS:
            raise _bad(f"unknown flag: {name}")
        if name[2:] in values:
            raise _bad(f"duplicate flag specified: {name}")
        if not eq:
            raise _bad(f"missing a value on flag: {name}")
        values[name[2:]] = value
    if kind != "CMD":
        raise _bad(f"Unknown type {_quote(kind)} in HEALTHCHECK (try CMD)")
    if not args:
        raise _bad("Missing command after HEALTHCHECK CMD")
    test = ["CMD", *args] if instruction.json else ["CMD-SHELL", " ".join(args)]
    health: dict[str, Any] = {"Test": test}
    for flag, key in _HEALTH_DURATIONS:
        nanoseconds = _duration(values[flag]) if values.get(flag) else 0
        if nanoseconds and nanoseconds < 10**6:
            raise _bad(f"Interval {_quote(flag)} cannot be less than 1ms")
        if nanoseconds:
            health[key] = nanoseconds
    if values.get("retries"):
        try:
            retries = int(values["retries"], 10)
        except ValueError:
            raise _bad(
                f"strconv.ParseInt: parsing {_quote(values['retries'])}: invalid syntax"
            ) from None
        if retries < 0:
            raise _bad(f"--retries cannot be negative ({retries})")
        if retries:
            health["Retries"] = retries
    return health


def _clean(path: str) -> str:
    """Go's ``filepath.Clean`` of an absolute path."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _check(instruction: _Instruction) -> None:
    """What buildkit's instruction parsing refuses before anything is applied."""
    kind = instruction.name.lower()
    if kind not in ALLOWED:
        raise _bad(f"{instruction.name} is not a valid change command")
    if kind in ("workdir", "user", "stopsignal"):
        _exactly_one(instruction)
    elif kind in ("env", "label"):
        _no_flags(instruction)
        _at_least_one(instruction)
        if any(not name for name, _ in instruction.kvs):
            raise _bad(f"{kind.upper()} names can not be blank")
    elif kind in ("expose", "volume", "onbuild"):
        _at_least_one(instruction)
        _no_flags(instruction)
        if kind == "onbuild":
            trigger = instruction.args[0].upper()
            if trigger == "ONBUILD":
                raise _bad("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
            if trigger in ("MAINTAINER", "FROM"):
                raise _bad(f"{trigger} isn't allowed as an ONBUILD trigger")
        if kind == "volume" and any(not v.strip() for v in instruction.args):
            raise _bad("VOLUME specified can not be an empty string")
    elif kind == "healthcheck":
        _healthcheck(instruction)
    else:
        _no_flags(instruction)


def _apply(config: dict[str, Any], instruction: _Instruction, cmd_set: bool) -> bool:
    """Apply one instruction; return whether a command has been set (``CMD`` with one)."""
    kind = instruction.name.lower()
    env = _env_of(config)
    if kind == "cmd":
        config["Cmd"] = _command(config, instruction, empty_as_nil=False)
        if "ArgsEscaped" in config:
            config["ArgsEscaped"] = False
        return cmd_set or bool(instruction.args)
    if kind == "entrypoint":
        config["Entrypoint"] = _command(config, instruction, empty_as_nil=True)
        if "ArgsEscaped" in config:
            config["ArgsEscaped"] = False
        if not cmd_set:
            config["Cmd"] = None
    elif kind == "env":
        variables = list(config.get("Env") or [])
        for name, value in [(_expand(k, env), _expand(v, env)) for k, v in instruction.kvs]:
            at = [i for i, item in enumerate(variables) if item.partition("=")[0] == name]
            if at:
                variables[at[0]] = f"{name}={value}"
            else:
                variables.append(f"{name}={value}")
        config["Env"] = variables
    elif kind == "label":
        labels = dict(config.get("Labels") or {})
        labels.update((_expand(k, env), _expand(v, env)) for k, v in instruction.kvs)
        config["Labels"] = labels
    elif kind == "expose":
        ports = dict(config.get("ExposedPorts") or {})
        for word in sorted(instruction.args):
            for spec in _expand_words(word, env):
                ports.update((port, {}) for port in _ports(spec))
        config["ExposedPorts"] = ports
    elif kind == "healthcheck":
        config["Healthcheck"] = _healthcheck(instruction)
    elif kind == "onbuild":
        config["OnBuild"] = [*(config.get("OnBuild") or []), _ONBUILD.sub("", instruction.original)]
    elif kind == "stopsignal":
        signal = _expand(instruction.args[0], env)
        parse_signal(signal)  # dockerd's ``Invalid signal: ...``
        config["StopSignal"] = signal
    elif kind == "user":
        config["User"] = _expand(instruction.args[0], env)
    elif kind == "volume":
        volumes = dict(config.get("Volumes") or {})
        for volume in instruction.args:
            path = _expand(volume.strip(), env)
            if not path:
                raise _bad("VOLUME specified can not be an empty string")
            volumes[path] = {}
        config["Volumes"] = volumes
    elif kind == "workdir":
        requested = _expand(instruction.args[0], env)
        if not requested:
            raise _bad("cannot normalize nothing")
        current = config.get("WorkingDir") or ""
        config["WorkingDir"] = _clean(posixpath.join("/", current, requested))
    return cmd_set


def apply_changes(config: Mapping[str, Any] | None, changes: Iterable[str]) -> dict[str, Any]:
    """``config`` (a container config with Docker's keys, not changed) with the ``changes``
    applied in order; 400 with dockerd's message for a change it refuses, before any applies."""
    changes = list(changes)
    result = copy.deepcopy(dict(config or {}))
    if not changes:
        return result
    instructions = [_parse(line) for line in _lines("\n".join(changes))]
    if not instructions:
        raise _bad("file with no instructions")
    for instruction in instructions:
        _check(instruction)
    cmd_set = False
    for instruction in instructions:
        cmd_set = _apply(result, instruction, cmd_set)
    return result
