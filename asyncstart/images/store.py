"""The image store: root filesystem layers on disk and the images that name them.

Layout under ``data_root/image``, each part kept by a module of its own::

    layers/<hex of the layer's diff ID>/   an extracted layer (a directory tree)   layers.py
    layer-tars/<hex of the diff ID>.tar    the layer's tar, kept for docker save    layers.py
    configs/<hex of the image ID>.json     the config; the ID is sha256 of its bytes configs.py
    repositories.json                      {"busybox:latest": "sha256:..."}           tags.py

:class:`ImageStore` is the facade: ``docker import`` (``imported.py``, ``--change`` lines by
``changes.py``), ``docker load`` (``archive.py``), ``docker save`` (``save.py``), ``docker
commit`` (``commit.py``), inspect, list, tag, and removal as the caller's policy decides it.
Extraction is safe (``extract.py``), and a failed import, load or commit leaves nothing behind.
"""

from __future__ import annotations

import datetime
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio

from .. import errors
from .archive import read_manifest, store_layers, unpack
from .commit import child_config, commit_config, layer_tar_from_upper
from .configs import ConfigStore
from .imported import container_config, import_config
from .layers import EMPTY_LAYER, LayerStore
from .reference import check_name, parse_reference
from .save import SavePlan, iter_save_archive, plan_save, save_names
from .source import ImageSource, ImportLimits, decompressed, spool
from .tags import TagFile

__all__ = ["ImageSource", "ImageStore", "RemovalPlan", "RemovalPolicy", "parse_reference"]

T = TypeVar("T")

_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class RemovalPlan:
    """What a removal does to one image: the names to untag, in the order they are reported,
    and whether to delete the image itself (then ``untag`` must hold every name it has)."""

    untag: tuple[str, ...] = ()
    delete: bool = False


#: Decides a removal from the image ID and its names (sorted); raises to refuse it.
RemovalPolicy = Callable[[str, list[str]], RemovalPlan]


class ImageStore:
    """Images and their layers under ``root`` (``data_root/image``)."""

    def __init__(self, root: Path, limits: ImportLimits | None = None) -> None:
        self.root = root
        #: The directory of the extracted layers.
        self.layers = root / "layers"
        #: The directory of the image configs.
        self.configs = root / "configs"
        self._layers = LayerStore(self.layers, limits)
        self._configs = ConfigStore(self.configs)
        self._tags = TagFile(root / "repositories.json")
        #: Guards repositories.json and configs (imports run in worker threads).
        self._lock = threading.RLock()

    def sweep(self) -> None:
        """At start: remove what imports and loads of a daemon killed mid-way left (their
        temporary directories), which nothing else would ever remove."""
        for pattern, directory in ((".upload-*", self.root), (".load-*", self.root),
                                   (".commit-*", self.root),
                                   (".import-*", self.layers)):  # fmt: skip
            for leftover in directory.glob(pattern):
                shutil.rmtree(leftover, ignore_errors=True)
        self._layers.sweep()

    # -- lookups ---------------------------------------------------------------------------

    def resolve(self, reference: str) -> str:
        """The image ID (``sha256:...``) for a ``name[:tag]``, a full or short ID; 404 else."""
        name, tag = parse_reference(reference)
        tags = self._tags.read()
        if f"{name}:{tag}" in tags:
            return tags[f"{name}:{tag}"]
        hex_part = reference.removeprefix("sha256:")
        # Four digits at least, as dockerd asks: fewer would match images by accident.
        if len(hex_part) >= 4 and set(hex_part) <= _HEX:
            found = self._configs.matching(hex_part)
            if len(found) == 1:
                return found[0]
        raise errors.NotFound(f"No such image: {reference}")

    def config(self, image_id: str) -> dict[str, Any]:
        """The image config of ``image_id`` (a full ID); 404 when there is none."""
        return self._configs.read(image_id)

    def config_bytes(self, image_id: str) -> bytes:
        """The config of ``image_id`` as stored (its sha256 is the ID); 404 when there is none."""
        return self._configs.raw(image_id)

    def layer_tar(self, diff_id: str) -> Path:
        """Where the layer's uncompressed tar is kept (absent for a layer stored before tars
        were kept)."""
        return self._layers.tar_path(diff_id)

    def layer_paths(self, image_id: str) -> list[Path]:
        """The image's layers, lowest first."""
        return [self._layers.path(d) for d in self.config(image_id)["rootfs"]["diff_ids"]]

    def container_image(self, reference: str) -> tuple[str, dict[str, Any] | None]:
        """For a container's create: the image ID and the defaults it gives the container (its
        config's ``config``: Cmd, Entrypoint, Env, WorkingDir, User); 404 for an unknown image.

        ``None`` in place of the defaults means an image the store does not know and that the
        container runs under its reference all the same (:class:`~.fake.FakeImageStore` only):
        there is nothing to merge, not even empty defaults.
        """
        image_id = self.resolve(reference)
        return image_id, self._defaults(image_id)

    def _defaults(self, image_id: str) -> dict[str, Any]:
        defaults: dict[str, Any] = self.config(image_id).get("config") or {}
        return defaults

    def tags_of(self, image_id: str) -> list[str]:
        """The ``name:tag`` names of ``image_id``, sorted."""
        return self._tags.of(image_id)

    # -- import and load -------------------------------------------------------------------

    def _locked(self, operation: Callable[..., T], *args: Any) -> T:
        """Imports, loads and removals one at a time: a removal must not take a layer that an
        import has found in place and is about to name in a config (they are rare; starts
        never wait on this lock)."""
        with self._lock:
            return operation(*args)

    def _tag(self, image_id: str, repo: str, tag: str) -> None:
        with self._lock:
            self._tags.set(f"{parse_reference(repo)[0]}:{tag}", image_id)

    async def import_(
        self,
        source: ImageSource,
        *,
        repo: str = "",
        tag: str = "",
        changes: Iterable[str] = (),
    ) -> str:
        """``docker import``: a rootfs tarball (plain or gzip) becomes a one-layer image.

        ``repo`` may carry the tag (``busybox:1``), as the docker CLI sends it."""
        if repo and not tag:
            repo, tag = parse_reference(repo)
        if repo:
            check_name(repo, tag)  # before any work: a bad name costs nothing
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".upload-") as tmpdir:
            scratch = Path(tmpdir)
            tar_path = await spool(source, scratch)
            return await anyio.to_thread.run_sync(
                self._locked, self._import, tar_path, scratch, repo, tag, list(changes)
            )

    def _import(
        self, tar_path: Path, scratch: Path, repo: str, tag: str, changes: list[str]
    ) -> str:
        if not tar_path.is_file():
            raise errors.InvalidParameter(f"no such file: {tar_path}")
        config = container_config(changes)  # before any work: a bad change costs nothing
        plain = decompressed(tar_path, scratch, self._layers.limits)
        diff_id, _ = self._layers.store(plain, owned=scratch in plain.parents)
        with self._lock:
            image_id = self._configs.write(import_config(config, diff_id))
            if repo:
                self._tag(image_id, repo, tag or "latest")
        return image_id

    async def load(self, source: ImageSource) -> list[str]:
        """``docker load`` of a ``docker save`` archive (layers with whiteouts); returns the
        ``Loaded image: ...`` lines. All or nothing."""
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".load-") as tmpdir:
            scratch = Path(tmpdir)
            archive_path = await spool(source, scratch)
            return await anyio.to_thread.run_sync(self._locked, self._load, archive_path, scratch)

    def _load(self, archive_path: Path, scratch: Path) -> list[str]:
        images = read_manifest(unpack(archive_path, scratch, self._layers.limits))
        staged = store_layers(images, self._layers, scratch)
        loaded = []
        with self._lock:
            for image in staged:
                image_id = self._configs.write(image.config)
                for reference in image.references:
                    self._tag(image_id, *parse_reference(reference))
                    loaded.append(f"Loaded image: {reference}")
                if not image.references:
                    loaded.append(f"Loaded image ID: {image_id}")
        return loaded

    # -- save and commit -----------------------------------------------------------------

    def save_targets(self, names: Sequence[str]) -> list[tuple[str, list[str]]]:
        """What ``docker save <names>`` saves: (image ID, its ``name:tag``\\ s to record), each
        image once, in the order named. A ``name:tag`` is that name; a name alone is every tag
        of that repository (else an image ID prefix); an ID records no name. 404 (dockerd's
        ``No such image: name:tag``) for a name no image has; 400 for a malformed one."""
        with self._lock:
            tags = self._tags.read()
            found: dict[str, list[str]] = {}
            for name in names:
                for image_id, reference in save_names(name, tags, self.resolve):
                    references = found.setdefault(image_id, [])
                    if reference and reference not in references:
                        references.append(reference)
            return list(found.items())

    def plan_save(self, names: Sequence[str]) -> SavePlan:
        """Resolve ``names`` and open what saving them takes, so that every refusal (404, a
        layer without its tar: 500) comes before the first byte; stream it with
        :func:`~.save.iter_save_archive` (sync) or :meth:`save_stream`."""
        with self._lock:
            return plan_save(self, self.save_targets(names))

    async def save(self, names: Sequence[str]) -> AsyncIterator[bytes]:
        """``docker save``: resolves and checks now (raising before anything is sent), then
        returns the archive's chunks (about 1 MiB each), produced in worker threads."""
        plan = await anyio.to_thread.run_sync(self.plan_save, list(names))
        return self.save_stream(plan)

    async def save_stream(self, plan: SavePlan) -> AsyncIterator[bytes]:
        """The archive of a plan, in chunks read and packed in worker threads; the plan's files
        are closed when the stream ends or is abandoned."""
        chunks = iter_save_archive(plan)
        try:
            while batch := await anyio.to_thread.run_sync(_batch, chunks):
                yield batch
        finally:
            chunks.close()
            plan.close()

    async def commit(
        self,
        parent_image_id: str,
        layer: Path | None,
        config: Mapping[str, Any] | None = None,
        *,
        container_id: str,
        container_config: Mapping[str, Any],
        author: str = "",
        comment: str = "",
        changes: Iterable[str] = (),
        repo: str = "",
        tag: str = "",
        id_map: tuple[int, int, int] | None = None,
    ) -> str:
        """``docker commit``: a new image on ``parent_image_id`` whose layer is the container's
        changes — ``layer`` its overlay upper directory (archived here, owners mapped back by
        ``id_map``), or a layer tar, or None for no change — and whose config is ``config``
        (the request's; the container's if None or empty) with ``changes`` applied and merged
        over ``container_config`` (dockerd's ``merge``). Tagged ``repo:tag`` (``latest``) if
        ``repo``. Returns the image ID. The caller pauses the container meanwhile."""
        if repo and not tag:
            repo, tag = parse_reference(repo)
        if repo:
            check_name(repo, tag)  # before any work
        new_config = commit_config(config, container_config, changes)  # (its 400s too)
        details = {"container_id": container_id, "container_config": container_config,
                   "author": author, "comment": comment}  # fmt: skip
        return await anyio.to_thread.run_sync(
            self._commit, parent_image_id, layer, id_map, new_config, details, repo, tag
        )

    def _parent_config(self, image_id: str) -> dict[str, Any]:
        """The config a commit builds on: the container's image (404 if it is gone)."""
        return self.config(image_id) if image_id else {}

    def _commit(
        self,
        parent_image_id: str,
        layer: Path | None,
        id_map: tuple[int, int, int] | None,
        config: dict[str, Any],
        details: dict[str, Any],
        repo: str,
        tag: str,
    ) -> str:
        self._parent_config(parent_image_id)  # its 404 before any work
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".commit-") as tmpdir:
            tar_path = layer
            if layer is not None and layer.is_dir():  # (archived outside the store's lock)
                tar_path = Path(tmpdir) / "layer.tar"
                with tar_path.open("wb") as out:
                    if not layer_tar_from_upper(layer, out, id_map=id_map):
                        tar_path = None  # no change: dockerd's empty layer, not added
            with self._lock:  # (the parent read again: no removal in between)
                parent = self._parent_config(parent_image_id)
                diff_id, new = EMPTY_LAYER, False
                if tar_path is not None:
                    owned = Path(tmpdir) in tar_path.parents
                    diff_id, new = self._layers.store(tar_path, owned=owned)
                try:
                    image_id = self._configs.write(child_config(parent, diff_id, config, **details))
                    if repo:
                        self._tag(image_id, repo, tag or "latest")
                except BaseException:
                    if new:
                        self._layers.discard([diff_id], ignore_errors=True)
                    raise
                if new and diff_id == EMPTY_LAYER:  # (a tar of no member: not in the image)
                    self._layers.discard([diff_id])
                return image_id

    # -- inspect, list, tag, remove -------------------------------------------------------

    def inspect(self, reference: str) -> dict[str, Any]:
        """``docker image inspect``: the Engine API's ``ImageInspect`` shape."""
        return self._describe(self.resolve(reference))

    def _describe(self, image_id: str) -> dict[str, Any]:
        config = self.config(image_id)
        diff_ids = config["rootfs"]["diff_ids"]
        return {
            "Id": image_id,
            "RepoTags": self.tags_of(image_id),
            "RepoDigests": [],
            "Created": config.get("created", ""),
            "Architecture": config.get("architecture", ""),
            "Os": config.get("os", ""),
            "Config": config.get("config", {}),
            "RootFS": {"Type": "layers", "Layers": diff_ids},
            "Size": sum(self._layers.size(diff_id) for diff_id in diff_ids),
        }

    def history(self, reference: str) -> list[dict[str, Any]]:
        """``docker history``: the image's history entries, newest first, each with the size
        of the layer it made (0 for one that made none); the newest is the image itself."""
        image_id = self.resolve(reference)
        config = self.config(image_id)
        diff_ids = list(config["rootfs"]["diff_ids"])
        entries = config.get("history") or [{} for _ in diff_ids]
        rows = []
        layer = 0
        for entry in entries:
            size = 0
            if not entry.get("empty_layer") and layer < len(diff_ids):
                size = self._layers.size(diff_ids[layer])
                layer += 1
            rows.append(
                {
                    "Id": "<missing>",
                    "Created": _epoch(entry.get("created") or config.get("created") or ""),
                    "CreatedBy": entry.get("created_by", ""),
                    "Tags": None,
                    "Size": size,
                    "Comment": entry.get("comment", ""),
                }
            )
        rows.reverse()
        if rows:
            rows[0] |= {"Id": image_id, "Tags": self.tags_of(image_id) or None}
        return rows

    def list_images(self) -> list[dict[str, Any]]:
        """``docker images``: one ``ImageSummary`` row per image, by ID."""
        rows = []
        for image_id in self._configs.ids():
            try:
                info = self._describe(image_id)
            except errors.NotFound:
                continue  # removed meanwhile
            rows.append(
                {
                    "Id": info["Id"],
                    "RepoTags": info["RepoTags"],
                    "Created": info["Created"],
                    "Size": info["Size"],
                    "Labels": info["Config"].get("Labels") or {},
                }
            )
        return rows

    def tag(self, reference: str, repo: str, tag: str = "latest") -> None:
        """``docker tag``: ``repo:tag`` names the image ``reference`` names (moved if taken)."""
        check_name(repo, tag or "latest")
        with self._lock:
            self._tag(self.resolve(reference), repo, tag or "latest")

    def remove(self, reference: str, policy: RemovalPolicy) -> list[str]:
        """``docker rmi`` as ``policy`` decides it: the ``Untagged: ...`` lines of the names it
        untags, then ``Deleted: <id>`` if it deletes the image (and the layers no other image
        uses). The policy sees the image's ID and names under the store's lock, so no import,
        load, tag or other removal changes them before its plan is applied."""
        with self._lock:
            image_id = self.resolve(reference)
            names = self.tags_of(image_id)
            plan = policy(image_id, list(names))
            strangers = set(plan.untag) - set(names)
            if strangers:
                raise ValueError(f"{image_id} has no names {sorted(strangers)}")
            if plan.delete and set(plan.untag) != set(names):
                raise ValueError(f"{image_id} cannot be deleted while it keeps names")
            self._tags.drop(plan.untag)
            removed = [f"Untagged: {name}" for name in plan.untag]
            if plan.delete:
                self._delete(image_id)
                removed.append(f"Deleted: {image_id}")
            return removed

    def _delete(self, image_id: str) -> None:
        diff_ids = self.config(image_id)["rootfs"]["diff_ids"]
        self._configs.delete(image_id)
        in_use = self._configs.diff_ids_in_use()
        self._layers.discard(d for d in diff_ids if d not in in_use)


def _batch(chunks: Iterator[bytes]) -> bytes:
    """The next 1 MiB (or what is left) of ``chunks``; empty at the end."""
    parts, size = [], 0
    for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size >= 1 << 20:
            break
    return b"".join(parts)


def _epoch(text: str) -> int:
    """An RFC 3339 time as Unix seconds (0 if there is none)."""
    try:
        return int(datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0
