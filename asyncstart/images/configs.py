"""Image configs, each stored as the exact bytes whose sha256 is the image ID."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .. import errors

__all__ = ["ConfigStore"]


class ConfigStore:
    """``configs/<hex of the image ID>.json`` under ``root`` (``data_root/image/configs``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, image_id: str) -> Path:
        return self.root / (image_id.removeprefix("sha256:") + ".json")

    def write(self, data: bytes) -> str:
        """Store a config as it is and return its ID: re-serialising would change the ID."""
        image_id = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self._path(image_id)
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.replace(tmp, path)
        return image_id

    def read(self, image_id: str) -> dict[str, Any]:
        """The config of ``image_id``; 404 when there is none."""
        config: dict[str, Any] = json.loads(self.raw(image_id))
        return config

    def raw(self, image_id: str) -> bytes:
        """The config of ``image_id`` as stored (its sha256 is the ID); 404 when there is none."""
        try:
            return self._path(image_id).read_bytes()
        except FileNotFoundError:
            raise errors.NotFound(f"No such image: {image_id}") from None

    def delete(self, image_id: str) -> None:
        """Forget ``image_id``; its layers are the caller's to drop."""
        self._path(image_id).unlink()

    def ids(self) -> list[str]:
        """Every stored image ID, sorted."""
        return ["sha256:" + path.stem for path in sorted(self.root.glob("*.json"))]

    def matching(self, hex_prefix: str) -> list[str]:
        """The image IDs that start with ``hex_prefix`` (lowercase hex, no ``sha256:``)."""
        return ["sha256:" + path.stem for path in self.root.glob(f"{hex_prefix}*.json")]

    def diff_ids_in_use(self) -> set[str]:
        """Every layer some stored image lists."""
        return {
            diff_id
            for path in self.root.glob("*.json")
            for diff_id in json.loads(path.read_bytes())["rootfs"]["diff_ids"]
        }
