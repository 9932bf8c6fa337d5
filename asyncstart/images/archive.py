"""``docker save`` archives: unpacked, their manifest read, their layers stored and checked."""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import errors
from .extract import safe_extract
from .layers import LayerStore
from .reference import check_name, parse_reference
from .source import ImportLimits, decompressed

__all__ = ["SavedImage", "read_manifest", "store_layers", "unpack"]


@dataclass(frozen=True)
class SavedImage:
    """One image of the archive: its config as stored, the layer tars it lists (lowest first),
    the diff IDs its config expects of them, and its ``RepoTags``."""

    config: bytes
    layers: list[Path]
    diff_ids: list[str]
    references: list[str]


def _member(root: Path, name: str) -> Path:
    """A file named by the manifest, which must be inside the archive."""
    path = (root / name).resolve()
    if not str(path).startswith(str(root.resolve()) + os.sep) or not path.is_file():
        raise errors.InvalidParameter(f"invalid archive: no file {name!r}")
    return path


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _image(root: Path, entry: Any) -> SavedImage:
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("Config", ""), str)
        or not _strings(entry.get("Layers", []))
        or not _strings(entry.get("RepoTags") or [])
    ):
        raise errors.InvalidParameter(
            "invalid archive: a manifest entry must have a Config, Layers and RepoTags as "
            "docker save writes them"
        )
    for reference in entry.get("RepoTags") or []:
        check_name(*parse_reference(reference))
    config = _member(root, entry.get("Config", "")).read_bytes()
    try:
        expected = json.loads(config)["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError):
        raise errors.InvalidParameter("invalid archive: an image config is invalid") from None
    layers = [_member(root, layer) for layer in entry.get("Layers", [])]
    if len(layers) != len(expected):
        raise errors.InvalidParameter("invalid archive: layers do not match the config")
    return SavedImage(config, layers, list(expected), list(entry.get("RepoTags") or []))


def read_manifest(root: Path) -> Iterator[SavedImage]:
    """The images of the archive unpacked at ``root``; 400 for a broken manifest, a config
    that is no image config, or a file it names that is missing or outside the archive.

    The manifest is read at once, each image only when the iteration reaches it: a load
    stores one image's layers before it looks at the next, and reports the first fault.
    """
    try:
        manifest = json.loads((root / "manifest.json").read_bytes())
    except (FileNotFoundError, ValueError) as exc:
        raise errors.InvalidParameter(f"invalid archive: manifest.json: {exc}") from None
    if not isinstance(manifest, list):
        raise errors.InvalidParameter("invalid archive: manifest.json is not a list")
    return (_image(root, entry) for entry in manifest)


def unpack(archive_path: Path, scratch: Path, limits: ImportLimits) -> Path:
    """Extract the archive (plain or gzip) into ``scratch``; return the directory."""
    workdir = scratch / "unpacked"
    workdir.mkdir()
    try:
        with tarfile.open(decompressed(archive_path, scratch, limits), "r:") as archive:
            safe_extract(archive, str(workdir), limits)
    except (tarfile.TarError, EOFError) as exc:
        raise errors.InvalidParameter(f"invalid tar archive: {exc}") from None
    return workdir


def _store_image_layers(
    image: SavedImage, layers: LayerStore, scratch: Path, created: list[str]
) -> None:
    for layer, want in zip(image.layers, image.diff_ids, strict=True):
        # Every file here is the load's own (unpacked into its scratch directory): the layer
        # store may hard-link it as the layer's kept tar instead of copying it.
        got, new = layers.store(decompressed(layer, scratch, layers.limits), owned=True)
        if new:
            created.append(got)
        if got != want:
            raise errors.InvalidParameter(
                f"invalid archive: layer {layer.name} is {got}, the config says {want}"
            )


def store_layers(
    images: Iterable[SavedImage], layers: LayerStore, scratch: Path
) -> list[SavedImage]:
    """Store every layer of every image, checking each against its config's diff IDs.

    All or nothing: on any failure the layers this call brought in are deleted again (those
    already there stay, other images use them).
    """
    created: list[str] = []
    staged = []
    try:
        for image in images:
            _store_image_layers(image, layers, scratch, created)
            staged.append(image)
    except BaseException:
        layers.discard(created, ignore_errors=True)
        raise
    return staged
