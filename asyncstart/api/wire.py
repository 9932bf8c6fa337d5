"""Docker's wire conventions: query arguments as dockerd's router reads them, JSON replies and
errors as it writes them, and the frames of its multiplexed stdio stream.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from .. import errors
from .._version import API_VERSION
from ..filters import timestamp
from ..views import parse_time
from .http import Request, Response

__all__ = [
    "JSON",
    "MAX_JSON_BODY",
    "VERSIONED",
    "arg_bool",
    "arg_filters",
    "arg_int",
    "created_seconds",
    "error_response",
    "frame",
    "json_body",
    "json_object",
    "json_reply",
    "primed",
    "stdio_type",
    "timestamp",
    "version_tuple",
]

#: Largest JSON request body accepted (a create request is a few KiB).
MAX_JSON_BODY = 4 * 1024 * 1024

VERSIONED = re.compile(r"/v(\d+(?:\.\d+)?)(/.*)")
_STREAM_IDS = {"stdin": 0, "stdout": 1, "stderr": 2}
_FALSE = ("", "0", "no", "false", "none")

JSON = [("Content-Type", "application/json")]


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def api_version(request: Request) -> tuple[int, ...]:
    """The API version the request speaks: its path's ``/v1.xx``, else the newest."""
    if versioned := VERSIONED.fullmatch(request.path):
        return version_tuple(versioned[1])
    return version_tuple(API_VERSION)


def json_reply(value: Any, status: int = 200) -> Response:
    # dockerd's encoder ends every document with a newline.
    return Response(status, msgspec.json.encode(value) + b"\n", JSON)


def error_response(exc: errors.DockerError) -> Response:
    if exc.status == 304:
        return Response(304)
    return json_reply({"message": exc.message}, exc.status)


def frame(stream: str, data: bytes) -> bytes:
    """One frame of dockerd's multiplexed stream: [id, 0, 0, 0, size (big-endian)] + data."""
    return struct.pack(">BxxxL", _STREAM_IDS[stream], len(data)) + data


def arg_bool(request: Request, name: str, default: bool = False) -> bool:
    """dockerd's ``BoolValueOrDefault``: absent is the default, ``0/no/false/none`` are false."""
    if name not in request.query:
        return default
    return request.arg(name).strip().lower() not in _FALSE


def arg_int(request: Request, name: str) -> int | None:
    value = request.arg(name)
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise errors.InvalidParameter(f'strconv.Atoi: parsing "{value}": invalid syntax') from None


def arg_filters(request: Request) -> dict[str, Any]:
    """The ``filters`` argument as JSON (the daemon normalises and checks it)."""
    text = request.arg("filters")
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise errors.InvalidParameter(f"invalid filter: {exc}") from None
    if not isinstance(raw, dict):
        raise errors.InvalidParameter("invalid filter: expected an object")
    return raw


async def json_body(request: Request) -> Any:
    data = await request.body.read(MAX_JSON_BODY)
    if not data.strip():
        return None
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if kind != "application/json":
        raise errors.InvalidParameter(
            f"unsupported Content-Type header ({kind}): must be 'application/json'"
        )
    try:
        return json.loads(data)
    except ValueError as exc:
        raise errors.InvalidParameter(f"invalid JSON: {exc}") from None
    except RecursionError:
        # (What Go's decoder says past its nesting limit.)
        raise errors.InvalidParameter("invalid JSON: exceeded max depth") from None


async def json_object(request: Request) -> dict[str, Any]:
    """A body that must be a JSON object (dockerd's 400 for none or another value)."""
    body = await json_body(request)
    if body is None:
        raise errors.InvalidParameter("invalid JSON: EOF")
    if not isinstance(body, dict):
        raise errors.InvalidParameter("invalid JSON: expected an object")
    return body


async def primed(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Run a stream to its first (empty) chunk before the head goes out: what it sets up
    there — a subscription — is in place when the client hears 200, and its errors are still
    answered with their own status."""
    if await anext(chunks) != b"":
        raise AssertionError("a primed stream starts with an empty chunk")
    return chunks


def stdio_type(tty: bool) -> str:
    if tty:
        return "application/vnd.docker.raw-stream"
    return "application/vnd.docker.multiplexed-stream"


def created_seconds(created: str) -> int:
    try:
        return int(parse_time(created)) if created else 0
    except ValueError:
        return 0
