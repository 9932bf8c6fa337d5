"""The ``filters`` of ``docker ps`` and ``docker events``: normalised once, matched as dockerd.

Clients send ``{"key": ["value", ...]}`` or the older ``{"key": {"value": true}}``; both become
``{"key": {"value", ...}}`` here, with dockerd's 400 for a key the listing does not know.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import errors
from .record import ContainerRecord

__all__ = [
    "CONTAINER_FILTERS",
    "EVENT_FILTERS",
    "IMAGE_FILTERS",
    "Filters",
    "container_filters",
    "container_matches",
    "event_filters",
    "event_matches",
    "has_label",
    "image_filters",
    "image_matches",
    "normalise",
    "timestamp",
]

#: Normalised filters: key -> the values any of which may match.
Filters = dict[str, set[str]]

CONTAINER_FILTERS = ("id", "name", "status", "label", "exited")
_STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def normalise(filters: Mapping[str, Any] | None, accepted: Iterable[str]) -> Filters:
    """``filters`` as ``{key: {values}}``; dockerd's 400 for a malformed value or an unknown
    key (every value is checked before any key, as the API always did)."""
    result: Filters = {}
    for key, value in (filters or {}).items():
        if not isinstance(value, Mapping | list | tuple | set | frozenset):
            raise errors.InvalidParameter(f"invalid filter '{key}'")
        result[key] = {str(v) for v in value}
    known = set(accepted)
    for key in result:
        if key not in known:
            raise errors.InvalidParameter(f"invalid filter '{key}'")
    return result


# -- containers ----------------------------------------------------------------------------


def container_filters(filters: Mapping[str, Any] | None) -> Filters:
    wanted = normalise(filters, CONTAINER_FILTERS)
    for status in wanted.get("status", ()):
        if status not in _STATUSES:
            raise errors.InvalidParameter(f"invalid filter 'status={status}'")
    return wanted


def container_matches(record: ContainerRecord, status: str, wanted: Filters) -> bool:
    """Whether a container (its record and Docker status) passes every filter."""
    if "id" in wanted and not any(record.id.startswith(v) for v in wanted["id"]):
        return False
    if "name" in wanted and not any(v.lstrip("/") in record.name for v in wanted["name"]):
        return False
    if "status" in wanted and status not in wanted["status"]:
        return False
    if "exited" in wanted and (status != "exited" or str(record.exit_code) not in wanted["exited"]):
        return False
    return all(has_label(record.config.labels, label) for label in wanted.get("label", ()))


def has_label(labels: Mapping[str, str], wanted: str) -> bool:
    """``key`` (present) or ``key=value`` (present with that value)."""
    key, has_value, value = wanted.partition("=")
    return labels.get(key) == value if has_value else key in labels


# -- events --------------------------------------------------------------------------------


def _is_actor(kind: str) -> Callable[[Mapping[str, Any], str], bool]:
    """A filter on an event's actor of this type, by ID prefix or name."""

    def check(message: Mapping[str, Any], value: str) -> bool:
        actor = message["Actor"]
        return message["Type"] == kind and (
            str(actor["ID"]).startswith(value) or actor["Attributes"].get("name") == value
        )

    return check


#: The event filters dockerd takes: key -> does this message match this value.
EVENT_FILTERS: dict[str, Callable[[Mapping[str, Any], str], bool]] = {
    "type": lambda m, v: m["Type"] == v,
    "event": lambda m, v: m["Action"] == v or m["Action"].startswith(v + ":"),
    "container": _is_actor("container"),
    "network": _is_actor("network"),
    "image": lambda m, v: m["Actor"]["Attributes"].get("image") == v,
    "scope": lambda m, v: m.get("scope") == v,
    "daemon": lambda m, v: m["Type"] == "daemon",
    "label": lambda m, v: has_label(m["Actor"]["Attributes"], v),
}


def event_filters(filters: Mapping[str, Any] | None) -> Filters:
    return normalise(filters, EVENT_FILTERS)


def event_matches(message: Mapping[str, Any], wanted: Filters) -> bool:
    """Whether an event passes every filter."""
    return all(
        any(EVENT_FILTERS[key](message, value) for value in values)
        for key, values in wanted.items()
    )


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def timestamp(value: str, now: float) -> float:
    """dockerd's ``GetTimestamp``: seconds since the epoch, RFC 3339, or a duration ago."""
    from .views import parse_time  # (views filters containers: imported once both exist)

    if not value:
        return 0.0
    try:
        return float(value)
    except ValueError:
        pass
    if _DURATION.sub("", value) == "":
        seconds = sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION.findall(value))
        return now - seconds
    try:
        return parse_time(value)
    except ValueError:
        raise errors.InvalidParameter(
            f'failed to parse value as time or duration: "{value}"'
        ) from None


# -- images --------------------------------------------------------------------------------

IMAGE_FILTERS = ("dangling", "label", "reference", "before", "since")


def image_filters(filters: Mapping[str, Any] | None) -> Filters:
    """``docker images --filter``: dockerd's keys, and its 400 for a bad ``dangling``."""
    wanted = normalise(filters, IMAGE_FILTERS)
    for value in wanted.get("dangling", ()):
        if value not in ("true", "false", "1", "0"):
            raise errors.InvalidParameter(f"invalid filter 'dangling={value}'")
    return wanted


def image_matches(row: Mapping[str, Any], wanted: Filters, created: Mapping[str, float]) -> bool:
    """Whether an image (its ``docker images`` row) passes every filter; ``created`` has the
    creation times of the images ``before``/``since`` name (by reference)."""
    tags = row.get("RepoTags") or []
    if "dangling" in wanted and bool(tags) == (wanted["dangling"] & {"true", "1"} != set()):
        return False
    labels = row.get("Labels") or {}
    if not all(has_label(labels, label) for label in wanted.get("label", ())):
        return False
    if "reference" in wanted and not any(
        fnmatch.fnmatchcase(tag, pattern) or fnmatch.fnmatchcase(tag.rsplit(":", 1)[0], pattern)
        for pattern in wanted["reference"]
        for tag in tags
    ):
        return False
    when = row.get("CreatedAt", 0.0)
    if any(when >= created[ref] for ref in wanted.get("before", ())):
        return False
    return not any(when <= created[ref] for ref in wanted.get("since", ()))
