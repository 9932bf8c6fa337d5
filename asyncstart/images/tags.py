"""``repositories.json``: the image each ``name:tag`` points to."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["TagFile"]


class TagFile:
    """``{"busybox:latest": "sha256:..."}`` in one JSON file, replaced atomically on each write.

    No locking of its own: a read-modify-write is safe only under the image store's lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, str]:
        """Every ``name:tag`` and its image ID (empty before the first tag)."""
        try:
            tags: dict[str, str] = json.loads(self.path.read_text())
            return tags
        except FileNotFoundError:
            return {}

    def write(self, tags: dict[str, str]) -> None:
        """Replace the file, so that a reader never sees half of it."""
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as file:
            file.write(json.dumps(tags, sort_keys=True))
        os.replace(tmp, self.path)

    def of(self, image_id: str) -> list[str]:
        """The names of ``image_id``, sorted."""
        return sorted(name for name, target in self.read().items() if target == image_id)

    def set(self, name: str, image_id: str) -> None:
        """Point ``name`` (``repo:tag``) at ``image_id``, moving it from any other image."""
        tags = self.read()
        tags[name] = image_id
        self.write(tags)

    def drop(self, names: Iterable[str]) -> None:
        """Remove these names; others are left as they are."""
        gone = set(names)
        if gone:
            self.write({n: t for n, t in self.read().items() if n not in gone})
