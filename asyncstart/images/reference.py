"""Image references: ``name[:tag]`` as the Engine API and the docker CLI write them."""

from __future__ import annotations

import re

from .. import errors

__all__ = ["check_name", "check_pull_reference", "parse_reference"]

# Docker Hub's long forms, stripped so that ``docker.io/library/busybox`` and ``busybox`` are
# one name in repositories.json.
_HUB_PREFIXES = ("docker.io/", "index.docker.io/")


def parse_reference(reference: str) -> tuple[str, str]:
    """``busybox`` -> (``busybox``, ``latest``); ``reg:5000/a/b:1`` -> (``reg:5000/a/b``, ``1``).

    Docker Hub's long forms name the same image: ``docker.io/library/busybox`` is ``busybox``.
    """
    name, sep, tag = reference.rpartition(":")
    # A colon followed by a slash belongs to a registry's port, not to a tag.
    if not sep or "/" in tag:
        name, tag = reference, "latest"
    for prefix in _HUB_PREFIXES:
        name = name.removeprefix(prefix)
    return name.removeprefix("library/"), tag


# Docker's reference grammar (distribution/reference): lower-case path components joined by
# separators, after an optional registry host[:port]; a tag of word characters, dots, dashes.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
)
_NAME = re.compile(rf"(?:{_HOST}(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")


def check_name(repository: str, tag: str = "") -> None:
    """dockerd's 400 for a repository or tag its reference grammar refuses (``..``, NUL,
    newlines, upper case, over 255 characters...)."""
    name = repository
    host, slash, _ = repository.partition("/")
    if slash and ("." in host or ":" in host or host == "localhost"):
        name = repository[len(host) + 1 :]  # the registry host may have upper case
    if name != name.lower() and _NAME.fullmatch(repository.lower()):
        raise errors.InvalidParameter(
            f"invalid reference format: repository name ({repository}) must be lowercase"
        )
    if len(repository) > 255 or not _NAME.fullmatch(repository):
        raise errors.InvalidParameter("invalid reference format")
    if tag and not _TAG.fullmatch(tag):
        raise errors.InvalidParameter("invalid reference format")


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def check_pull_reference(reference: str, tag: str = "") -> None:
    """dockerd's 400 for what a pull names: ``name[:tag][@digest]``, and a ``tag`` argument
    that is a tag or a digest."""
    name, at, digest = reference.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise errors.InvalidParameter("invalid reference format")
    repository, sep, inline_tag = name.rpartition(":")
    if not sep or "/" in inline_tag:
        repository, inline_tag = name, ""
    check_name(repository, inline_tag)
    if tag and not (_DIGEST.fullmatch(tag) if ":" in tag else _TAG.fullmatch(tag)):
        raise errors.InvalidParameter("invalid reference format")
