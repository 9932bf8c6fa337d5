"""``docker save``: images as the tar stream ``docker load`` reads, in the layout dockerd 25+
writes (``daemon/internal/image/tarexport/save.go``): an OCI image layout that is also the
classic one.

::

    blobs/sha256/<config hex>     the image config, its exact stored bytes
    blobs/sha256/<diff id hex>    each layer's uncompressed tar (its sha256 *is* the diff ID)
    blobs/sha256/<manifest hex>   an OCI manifest per image
    index.json                    the OCI index: a manifest per name (annotated), or untagged
    manifest.json                 [{"Config", "RepoTags", "Layers"}] (what ``docker load`` reads)
    oci-layout                    {"imageLayoutVersion": "1.0.0"}
    repositories                  {"busybox": {"latest": "<top layer hex>"}} (names only)

A layer shared by several images is written once. Layers are the tars the layer store kept
(``layers.py``), streamed in chunks: memory stays bounded whatever the image's size. Unlike
dockerd, the per-layer legacy v1 JSON blobs (unreferenced) are not written.

:class:`TarWriter` writes tars as Go's ``archive/tar`` does (PAX where needed, no padding to a
record: the stream ends with its two zero blocks); ``commit.py`` uses it too.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import tarfile
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, BinaryIO

from .. import errors
from .reference import check_name, parse_reference

if TYPE_CHECKING:
    from .store import ImageStore

__all__ = [
    "SavePlan",
    "TarWriter",
    "iter_save_archive",
    "plan_save",
    "save_names",
    "write_save_archive",
]

_CHUNK = 1 << 20
_BLOCK = tarfile.BLOCKSIZE
_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_CONFIG = "application/vnd.oci.image.config.v1+json"
_LAYER = "application/vnd.oci.image.layer.v1.tar"
_INDEX = "application/vnd.oci.image.index.v1+json"
_HEX = frozenset("0123456789abcdef")


def tar_header(info: tarfile.TarInfo) -> bytes:
    """One member's header block(s), PAX records where ustar cannot say it (long names,
    xattrs, big numbers)."""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def tar_member(info: tarfile.TarInfo, data: bytes | IO[bytes] | None = None) -> Iterator[bytes]:
    """A member as chunks: its header, then exactly ``info.size`` bytes of ``data``, padded to a
    block. A file that no longer has that many bytes (changed while read) is an error, as in
    Go's writer: the archive would be corrupt."""
    yield tar_header(info)
    if not info.size:
        return
    if isinstance(data, bytes):
        if len(data) != info.size:
            raise errors.SystemError(f"{info.name}: {len(data)} bytes, not {info.size}")
        yield data
    else:
        assert data is not None
        left = info.size
        while left:
            chunk = data.read(min(left, _CHUNK))
            if not chunk:
                raise errors.SystemError(f"{info.name}: changed while being archived")
            left -= len(chunk)
            yield chunk
    if info.size % _BLOCK:
        yield bytes(_BLOCK - info.size % _BLOCK)


def tar_end() -> bytes:
    """The end of an archive: two zero blocks (no padding to tarfile's 10 KiB records)."""
    return bytes(2 * _BLOCK)


class TarWriter:
    """Members written one after the other into ``out`` (a file or a pipe: never seeks)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        #: Members written so far.
        self.members = 0

    def add(self, info: tarfile.TarInfo, data: bytes | IO[bytes] | None = None) -> None:
        for chunk in tar_member(info, data):
            self.out.write(chunk)
        self.members += 1

    def close(self) -> None:
        self.out.write(tar_end())


def save_names(
    name: str, tags: Mapping[str, str], resolve: Callable[[str], str]
) -> list[tuple[str, str]]:
    """The images one name of ``docker save`` stands for, with the ``name:tag`` each records
    (empty: none), as dockerd's ``parseNames``: an ID (full, ``sha256:`` or a prefix) records
    no name; ``name:tag`` is that tag; a name alone is every tag of that repository, else an
    ID prefix. ``tags`` maps ``name:tag`` to image IDs, ``resolve`` finds an image by ID."""
    hex_part = name.removeprefix("sha256:")
    if name.startswith("sha256:") or (len(hex_part) == 64 and set(hex_part) <= _HEX):
        return [(resolve(name), "")]
    if "@" in name:  # a digest reference: no RepoDigests here
        raise errors.NotFound(f"No such image: {name}")
    repo, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        repo, tag = name, ""
    repo = parse_reference(repo)[0]
    check_name(repo, tag)
    if tag:
        if f"{repo}:{tag}" not in tags:
            raise errors.NotFound(f"No such image: {repo}:{tag}")
        return [(tags[f"{repo}:{tag}"], f"{repo}:{tag}")]
    named = sorted((ref, i) for ref, i in tags.items() if ref.rpartition(":")[0] == repo)
    if named:
        return [(image_id, reference) for reference, image_id in named]
    try:
        return [(resolve(name), "")]  # (an image ID's prefix)
    except errors.NotFound:
        raise errors.NotFound(f"No such image: {repo}:latest") from None


# -- the plan: what to write, checked and opened before the first byte -------------------------


@dataclass
class _Image:
    image_id: str
    repo_tags: list[str]
    config: bytes
    diff_ids: list[str]
    mtime: int


@dataclass
class SavePlan:
    """The images of one save, their configs read and their layer tars open (a removal during
    the save cannot take a layer away from it). Close it, or iterate it to the end."""

    images: list[_Image] = field(default_factory=list)
    layers: dict[str, IO[bytes]] = field(default_factory=dict)

    def close(self) -> None:
        for file in self.layers.values():
            file.close()


def _mtime(config: bytes) -> int:
    """The image's ``created`` as Unix seconds (dockerd dates an image's files by it)."""
    try:
        text = json.loads(config).get("created") or ""
        return int(datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())
    except (ValueError, TypeError, AttributeError):
        return 0


def plan_save(store: ImageStore, images: Sequence[tuple[str, Sequence[str]]]) -> SavePlan:
    """Read and open what saving ``images`` (image ID, ``name:tag``\\ s) takes: 404 for an image
    the store does not have; 500 naming the image for one without layers (dockerd's ``empty
    export - not implemented``) or with a layer stored before the layer store kept its tar."""
    plan = SavePlan()
    try:
        for image_id, repo_tags in images:
            _plan_image(store, plan, image_id, list(repo_tags))
    except BaseException:
        plan.close()
        raise
    return plan


def _plan_image(store: ImageStore, plan: SavePlan, image_id: str, repo_tags: list[str]) -> None:
    config = store.config_bytes(image_id)
    diff_ids = list(json.loads(config)["rootfs"]["diff_ids"])
    label = repo_tags[0] if repo_tags else image_id
    if not diff_ids:
        raise errors.SystemError(f"cannot save {label}: empty export - not implemented")
    for diff_id in diff_ids:
        if diff_id in plan.layers:
            continue
        try:
            plan.layers[diff_id] = store.layer_tar(diff_id).open("rb")
        except FileNotFoundError:
            raise errors.SystemError(
                f"cannot save {label}: its layer {diff_id} was stored without its tar "
                "(by an older asyncstart); remove the image and import or load it again"
            ) from None
    plan.images.append(_Image(image_id, repo_tags, config, diff_ids, _mtime(config)))


def _full_name(name: str) -> str:
    """``busybox`` -> ``docker.io/library/busybox``, as dockerd's annotations name it."""
    first, slash, _ = name.partition("/")
    if not slash:
        return "docker.io/library/" + name
    if "." in first or ":" in first or first == "localhost":
        return name
    return "docker.io/" + name


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _file(name: str, size: int, mtime: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, mtime
    return info


def _directory(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info


def _documents(plan: SavePlan) -> tuple[dict[str, tuple[bytes, int]], dict[str, bytes]]:
    """The blobs written from memory (configs, manifests: hex -> bytes, mtime), and the
    top-level files."""
    blobs: dict[str, tuple[bytes, int]] = {}
    manifest: list[dict[str, object]] = []
    index: list[dict[str, object]] = []
    repositories: dict[str, dict[str, str]] = {}
    for image in plan.images:
        config_hex = image.image_id.removeprefix("sha256:")
        blobs.setdefault(config_hex, (image.config, image.mtime))
        layers = [
            {"mediaType": _LAYER, "digest": d, "size": os.fstat(plan.layers[d].fileno()).st_size}
            for d in image.diff_ids
        ]
        oci = _json({"schemaVersion": 2, "mediaType": _MANIFEST,
                     "config": {"mediaType": _CONFIG, "digest": image.image_id,
                                "size": len(image.config)},
                     "layers": layers})  # fmt: skip
        digest = hashlib.sha256(oci).hexdigest()
        blobs.setdefault(digest, (oci, 0))
        descriptor = {"mediaType": _MANIFEST, "digest": "sha256:" + digest, "size": len(oci)}
        for reference in image.repo_tags:
            name, _, tag = reference.rpartition(":")
            top = image.diff_ids[-1].removeprefix("sha256:")
            repositories.setdefault(name, {})[tag] = top
            index.append(descriptor | {"annotations": {
                "io.containerd.image.name": f"{_full_name(name)}:{tag}",
                "org.opencontainers.image.ref.name": tag}})  # fmt: skip
        if not image.repo_tags:
            index.append(descriptor)
        manifest.append({
            "Config": f"blobs/sha256/{config_hex}",
            "RepoTags": image.repo_tags or None,
            "Layers": [f"blobs/sha256/{d.removeprefix('sha256:')}" for d in image.diff_ids],
        })  # fmt: skip
    files = {
        "index.json": _json({"schemaVersion": 2, "mediaType": _INDEX, "manifests": index}),
        "manifest.json": _json(manifest) + b"\n",
        "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
    }
    if repositories:
        files["repositories"] = _json(repositories) + b"\n"
    return blobs, files


def iter_save_archive(plan: SavePlan) -> Generator[bytes, None, None]:
    """The archive of ``plan``, in chunks of at most 1 MiB (plus headers); closes the plan's
    files when done or abandoned."""
    try:
        blobs, files = _documents(plan)
        layer_mtime = {}
        for image in reversed(plan.images):  # (the first image that lists a layer dates it)
            layer_mtime.update(dict.fromkeys(image.diff_ids, image.mtime))
        layers = {d.removeprefix("sha256:"): d for d in plan.layers}
        yield tar_header(_directory("blobs/"))
        yield tar_header(_directory("blobs/sha256/"))
        for hex_digest in sorted({*blobs, *layers}):
            name = f"blobs/sha256/{hex_digest}"
            if hex_digest in layers:
                diff_id = layers[hex_digest]
                file = plan.layers[diff_id]
                size = os.fstat(file.fileno()).st_size
                yield from tar_member(_file(name, size, layer_mtime[diff_id]), file)
            else:
                data, mtime = blobs[hex_digest]
                yield from tar_member(_file(name, len(data), mtime), data)
        for name, data in files.items():
            yield from tar_member(_file(name, len(data)), data)
        yield tar_end()
    finally:
        plan.close()


def write_save_archive(
    store: ImageStore, images: Sequence[tuple[str, Sequence[str]]], out: BinaryIO
) -> None:
    """Write the ``docker save`` archive of ``images`` (image ID, its ``name:tag``\\ s to
    record, none for an image saved by ID) into ``out``: a sync writer for a worker thread
    (into a pipe, a file, a socket)."""
    for chunk in iter_save_archive(plan_save(store, images)):
        out.write(chunk)
