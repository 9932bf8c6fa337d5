"""Image references: ``name[:tag]`` as the Engine API and the docker CLI write them."""

from __future__ import annotations

__all__ = ["parse_reference"]

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
