"""The image store: root filesystem layers on disk and the images that name them.

Layout under ``data_root/image``::

    layers/<hex of the layer's diff ID>/   an extracted layer (a directory tree)
    configs/<hex of the image ID>.json     the image config; the ID is sha256 of these bytes
    repositories.json                      {"busybox:latest": "sha256:..."}

Extraction is safe: a member with an absolute path or ``..``, one that would be written through
a symlink out of the layer, a hard link to outside the layer, or a device node is refused with a
clear error, and a failed import leaves nothing behind (it extracts into a temporary directory
that is renamed into place only when complete).
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import json
import os
import shlex
import shutil
import stat
import tarfile
import tempfile
import threading
import time
from collections.abc import AsyncIterable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import anyio

from .. import errors

__all__ = ["ImageSource", "ImageStore", "parse_reference"]

T = TypeVar("T")

#: A tarball to import or load: a path, or the bytes as they arrive (an HTTP body).
ImageSource = str | os.PathLike[str] | AsyncIterable[bytes]

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_CHANGE_KEYS = {"CMD": "Cmd", "ENTRYPOINT": "Entrypoint", "ENV": "Env", "WORKDIR": "WorkingDir",
                "USER": "User"}  # fmt: skip


def parse_reference(reference: str) -> tuple[str, str]:
    """``busybox`` -> (``busybox``, ``latest``); ``reg:5000/a/b:1`` -> (``reg:5000/a/b``, ``1``).

    Docker Hub's long forms name the same image: ``docker.io/library/busybox`` is ``busybox``.
    """
    name, sep, tag = reference.rpartition(":")
    if not sep or "/" in tag:
        name, tag = reference, "latest"
    for prefix in ("docker.io/", "index.docker.io/"):
        name = name.removeprefix(prefix)
    return name.removeprefix("library/"), tag


def _reject(name: str, reason: str) -> errors.InvalidParameter:
    return errors.InvalidParameter(f"refusing to extract {name!r} from the archive: {reason}")


def _clear(path: str, member: tarfile.TarInfo) -> None:
    """Make room for ``member`` at ``path`` without ever following what is there: a later entry
    replaces an earlier one (tar semantics), and a symlink left by an earlier entry must not
    redirect the write (``x -> /etc/passwd`` then a file ``x``)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if not member.isdir():
            shutil.rmtree(path)
    else:
        os.unlink(path)


def _safe_extract(archive: tarfile.TarFile, destination: str) -> None:
    root = os.path.realpath(destination)

    def inside(path: str) -> bool:
        return path == root or path.startswith(root + os.sep)

    for member in archive:
        name = member.name
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if name.startswith("/") or ".." in parts:
            raise _reject(name, "absolute paths and '..' are not allowed")
        if not parts:
            continue
        if member.ischr() or member.isblk():
            raise _reject(name, "device nodes are not allowed")
        # realpath resolves symlinks already extracted: a parent that is a link out of the
        # layer (``evil -> /etc``, then ``evil/passwd``) is caught here.
        parent = os.path.realpath(os.path.join(root, *parts[:-1]))
        if not inside(parent):
            raise _reject(name, "it would be written outside the layer through a symlink")
        base = parts[-1]
        if base.startswith(_WHITEOUT):
            # A whiteout hides what lower layers have; overlayfs spells it as a 0/0 device
            # (or, for ``.wh..wh..opq``, an opaque directory).
            os.makedirs(parent, exist_ok=True)
            if base == _OPAQUE:
                os.setxattr(parent, "trusted.overlay.opaque", b"y")
                continue
            hidden_name = base[len(_WHITEOUT) :]
            if hidden_name in ("", ".", ".."):
                raise _reject(name, "not a valid whiteout")
            hidden = os.path.join(parent, hidden_name)
            _clear(hidden, member)
            os.mknod(hidden, stat.S_IFCHR | 0o600, os.makedev(0, 0))
            continue
        if member.islnk():
            link_parts = [p for p in member.linkname.split("/") if p not in ("", ".")]
            if member.linkname.startswith("/") or ".." in link_parts:
                raise _reject(name, "hard links must stay inside the layer")
            if not inside(os.path.realpath(os.path.join(root, *link_parts))):
                raise _reject(name, "hard links must stay inside the layer")
        _clear(os.path.join(parent, base), member)
        member.name = "/".join(parts)
        archive.extract(member, root, set_attrs=True, numeric_owner=True, filter="fully_trusted")


def _parse_changes(changes: Iterable[str], config: dict[str, Any]) -> None:
    for change in changes:
        keyword, _, rest = change.strip().partition(" ")
        key = _CHANGE_KEYS.get(keyword.upper())
        if key is None:
            raise errors.InvalidParameter(f"{keyword} is not a valid change command")
        rest = rest.strip()
        if key in ("Cmd", "Entrypoint"):
            if rest.startswith("["):
                try:
                    value = json.loads(rest)
                except json.JSONDecodeError as exc:
                    raise errors.InvalidParameter(f"invalid {keyword}: {exc}") from None
            else:
                value = ["/bin/sh", "-c", rest]
            config[key] = value
        elif key == "Env":
            name, eq, value = rest.partition("=")
            if not eq:
                name, _, value = rest.partition(" ")
            env = [e for e in config.get("Env", []) if not e.startswith(name + "=")]
            config["Env"] = [*env, f"{name}={value.strip()}"]
        else:
            config[key] = shlex.split(rest)[0] if rest else ""


class ImageStore:
    """Images and their layers under ``root`` (``data_root/image``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.layers = root / "layers"
        self.configs = root / "configs"
        self._repositories = root / "repositories.json"
        #: Guards repositories.json and configs (imports run in worker threads).
        self._lock = threading.RLock()
        for directory in (self.layers, self.configs):
            directory.mkdir(parents=True, exist_ok=True)

    # -- names -----------------------------------------------------------------------------

    def _tags(self) -> dict[str, str]:
        try:
            tags: dict[str, str] = json.loads(self._repositories.read_text())
            return tags
        except FileNotFoundError:
            return {}

    def _save_tags(self, tags: dict[str, str]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        with os.fdopen(fd, "w") as file:
            file.write(json.dumps(tags, sort_keys=True))
        os.replace(tmp, self._repositories)

    def resolve(self, reference: str) -> str:
        """The image ID (``sha256:...``) for a ``name[:tag]``, a full or short ID; 404 else."""
        name, tag = parse_reference(reference)
        tags = self._tags()
        if f"{name}:{tag}" in tags:
            return tags[f"{name}:{tag}"]
        hex_part = reference.removeprefix("sha256:")
        if len(hex_part) >= 4 and all(c in "0123456789abcdef" for c in hex_part):
            found = [p.stem for p in self.configs.glob(f"{hex_part}*.json")]
            if len(found) == 1:
                return "sha256:" + found[0]
        raise errors.NotFound(f"No such image: {reference}")

    def config(self, image_id: str) -> dict[str, Any]:
        path = self.configs / (image_id.removeprefix("sha256:") + ".json")
        try:
            config: dict[str, Any] = json.loads(path.read_bytes())
            return config
        except FileNotFoundError:
            raise errors.NotFound(f"No such image: {image_id}") from None

    def layer_paths(self, image_id: str) -> list[Path]:
        """The image's layers, lowest first."""
        return [
            self.layers / diff_id.removeprefix("sha256:")
            for diff_id in self.config(image_id)["rootfs"]["diff_ids"]
        ]

    # -- import ----------------------------------------------------------------------------

    @staticmethod
    def _plain(path: Path, scratch: Path) -> Path:
        """``path`` itself if it is not gzip, else a decompressed copy in ``scratch``."""
        with path.open("rb") as file:
            if file.read(2) != b"\x1f\x8b":
                return path
        plain = Path(tempfile.mkstemp(dir=scratch, suffix=".tar")[1])
        with gzip.open(path, "rb") as src, plain.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        return plain

    def _store_layer(self, tar_path: Path) -> tuple[str, bool]:
        """Extract an uncompressed layer tar; return its diff ID and whether it is new."""
        digest = hashlib.sha256()
        with tar_path.open("rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
        diff_id = "sha256:" + digest.hexdigest()
        target = self.layers / digest.hexdigest()
        if target.exists():
            return diff_id, False
        tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=self.layers))
        try:
            os.chmod(tmp, 0o755)
            try:
                with tarfile.open(tar_path, "r:") as archive:
                    _safe_extract(archive, str(tmp))
            except (tarfile.TarError, EOFError) as exc:
                raise errors.InvalidParameter(f"invalid tar archive: {exc}") from None
            except OSError as exc:
                raise errors.InvalidParameter(f"invalid layer: {exc}") from None
            try:
                os.rename(tmp, target)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # the same layer arrived meanwhile
                return diff_id, False
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return diff_id, True

    def _import(
        self, tar_path: Path, scratch: Path, repo: str, tag: str, changes: list[str]
    ) -> str:
        if not tar_path.is_file():
            raise errors.InvalidParameter(f"no such file: {tar_path}")
        container_config: dict[str, Any] = {"Env": []}
        _parse_changes(changes, container_config)  # before any work: a bad change costs nothing
        diff_id, _ = self._store_layer(self._plain(tar_path, scratch))
        if not container_config["Env"]:
            container_config["Env"] = [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            ]
        with self._lock:
            image_id = self._write_config(
                {
                    "architecture": "amd64",
                    "os": "linux",
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "config": container_config,
                    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                    "history": [
                        {"created_by": "asyncstart import", "comment": "Imported from tarball"}
                    ],
                }
            )
            if repo:
                self._tag(image_id, repo, tag or "latest")
        return image_id

    def _write_config(self, config: dict[str, Any]) -> str:
        return self._write_config_bytes(
            json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        )

    def _write_config_bytes(self, data: bytes) -> str:
        """Store an image config as it is: its ID is the sha256 of exactly these bytes."""
        hex_id = hashlib.sha256(data).hexdigest()
        path = self.configs / f"{hex_id}.json"
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=self.configs, suffix=".tmp")
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.replace(tmp, path)
        return "sha256:" + hex_id

    def _tag(self, image_id: str, repo: str, tag: str) -> None:
        with self._lock:
            tags = self._tags()
            tags[f"{parse_reference(repo)[0]}:{tag}"] = image_id
            self._save_tags(tags)

    def _locked(self, operation: Callable[..., T], *args: Any) -> T:
        """Imports, loads and removals one at a time: a removal must not take a layer that an
        import has found in place and is about to name in a config (they are rare; starts
        never wait on this lock)."""
        with self._lock:
            return operation(*args)

    async def _upload(self, source: ImageSource, scratch: Path) -> Path:
        if isinstance(source, (str, os.PathLike)):
            return Path(source)
        path = scratch / "upload.tar"
        async with await anyio.open_file(path, "wb") as out:
            async for chunk in source:
                await out.write(chunk)
        return path

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
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".upload-") as tmpdir:
            scratch = Path(tmpdir)
            tar_path = await self._upload(source, scratch)
            return await anyio.to_thread.run_sync(
                self._locked, self._import, tar_path, scratch, repo, tag, list(changes)
            )

    def _load(self, archive_path: Path, scratch: Path) -> list[str]:
        workdir = scratch / "unpacked"
        workdir.mkdir()
        try:
            with tarfile.open(self._plain(archive_path, scratch), "r:") as archive:
                _safe_extract(archive, str(workdir))
        except (tarfile.TarError, EOFError) as exc:
            raise errors.InvalidParameter(f"invalid tar archive: {exc}") from None
        try:
            manifest = json.loads((workdir / "manifest.json").read_bytes())
        except (FileNotFoundError, ValueError) as exc:
            raise errors.InvalidParameter(f"invalid archive: manifest.json: {exc}") from None
        if not isinstance(manifest, list):
            raise errors.InvalidParameter("invalid archive: manifest.json is not a list")
        created: list[str] = []
        try:
            staged = self._stage_layers(workdir, scratch, manifest, created)
        except BaseException:
            # A failed load leaves behind no layer it brought in, and no image or tag.
            for diff_id in created:
                shutil.rmtree(self.layers / diff_id.removeprefix("sha256:"), ignore_errors=True)
            raise
        loaded = []
        with self._lock:
            for config_bytes, references in staged:
                image_id = self._write_config_bytes(config_bytes)
                for reference in references:
                    self._tag(image_id, *parse_reference(reference))
                    loaded.append(f"Loaded image: {reference}")
                if not references:
                    loaded.append(f"Loaded image ID: {image_id}")
        return loaded

    def _stage_layers(
        self, workdir: Path, scratch: Path, manifest: list[dict[str, Any]], created: list[str]
    ) -> list[tuple[bytes, list[str]]]:
        """Store every layer of every image, checking each against its config."""
        staged = []
        for entry in manifest:
            config_bytes = _member(workdir, entry.get("Config", "")).read_bytes()
            try:
                config = json.loads(config_bytes)
                expected = config["rootfs"]["diff_ids"]
            except (ValueError, KeyError, TypeError):
                raise errors.InvalidParameter(
                    "invalid archive: an image config is invalid"
                ) from None
            layers = [_member(workdir, layer) for layer in entry.get("Layers", [])]
            if len(layers) != len(expected):
                raise errors.InvalidParameter("invalid archive: layers do not match the config")
            for layer, want in zip(layers, expected, strict=True):
                got, new = self._store_layer(self._plain(layer, scratch))
                if new:
                    created.append(got)
                if got != want:
                    raise errors.InvalidParameter(
                        f"invalid archive: layer {layer.name} is {got}, the config says {want}"
                    )
            staged.append((config_bytes, list(entry.get("RepoTags") or [])))
        return staged

    async def load(self, source: ImageSource) -> list[str]:
        """``docker load`` of a ``docker save`` archive (layers with whiteouts); returns the
        ``Loaded image: ...`` lines. All or nothing."""
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".load-") as tmpdir:
            scratch = Path(tmpdir)
            archive_path = await self._upload(source, scratch)
            return await anyio.to_thread.run_sync(self._locked, self._load, archive_path, scratch)

    # -- inspect, list, tag, remove -------------------------------------------------------

    def tags_of(self, image_id: str) -> list[str]:
        return sorted(name for name, target in self._tags().items() if target == image_id)

    def inspect(self, reference: str) -> dict[str, Any]:
        image_id = self.resolve(reference)
        config = self.config(image_id)
        size = sum(_tree_size(p) for p in self.layer_paths(image_id))
        return {
            "Id": image_id,
            "RepoTags": self.tags_of(image_id),
            "RepoDigests": [],
            "Created": config.get("created", ""),
            "Architecture": config.get("architecture", ""),
            "Os": config.get("os", ""),
            "Config": config.get("config", {}),
            "RootFS": {"Type": "layers", "Layers": config["rootfs"]["diff_ids"]},
            "Size": size,
        }

    def list_images(self) -> list[dict[str, Any]]:
        rows = []
        for path in sorted(self.configs.glob("*.json")):
            try:
                info = self.inspect(path.stem)
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
        with self._lock:
            self._tag(self.resolve(reference), repo, tag or "latest")

    def remove(
        self, reference: str, *, users: Iterable[tuple[str, bool]] = (), force: bool = False
    ) -> list[str]:
        """``docker rmi``: what was untagged and deleted, as dockerd reports it.

        ``users`` are the containers using the image, each with whether it runs. A tag of an
        image with other tags is only untagged; an image a running container uses cannot be
        deleted; one a stopped container uses needs ``force`` and is then only untagged.
        """
        with self._lock:
            image_id = self.resolve(reference)
            short = image_id[7:19]
            tags = self.tags_of(image_id)
            name, tag = parse_reference(reference)
            by_tag = f"{name}:{tag}" in tags
            if by_tag and len(tags) > 1:
                self._save_tags({n: t for n, t in self._tags().items() if n != f"{name}:{tag}"})
                return [f"Untagged: {name}:{tag}"]
            if not by_tag and len(tags) > 1 and not force:
                raise errors.Conflict(
                    f"conflict: unable to delete {short} (must be forced) - image is referenced"
                    " in multiple repositories"
                )
            users = list(users)
            running = [cid for cid, live in users if live]
            if running and force and tags:
                # dockerd: a forced rmi of a name in use by a running container untags it.
                removed = [f"Untagged: {n}" for n in tags]
                self._save_tags({n: t for n, t in self._tags().items() if t != image_id})
                return removed
            if running:
                raise errors.Conflict(
                    f"conflict: unable to delete {short} (cannot be forced) - image is being used"
                    f" by running container {running[0][:12]}"
                )
            if users and not force:
                raise errors.Conflict(
                    f'conflict: unable to remove repository reference "{reference}" (must force)'
                    f" - container {users[0][0][:12]} is using its referenced image {short}"
                )
            removed = [f"Untagged: {n}" for n in tags]
            self._save_tags({n: t for n, t in self._tags().items() if t != image_id})
            if users:
                return removed  # still used by stopped containers: kept, untagged
            config = self.config(image_id)
            (self.configs / (image_id[7:] + ".json")).unlink()
            removed.append(f"Deleted: {image_id}")
            still_used = {
                diff_id
                for path in self.configs.glob("*.json")
                for diff_id in json.loads(path.read_bytes())["rootfs"]["diff_ids"]
            }
            for diff_id in config["rootfs"]["diff_ids"]:
                if diff_id not in still_used:
                    with contextlib.suppress(FileNotFoundError):
                        shutil.rmtree(self.layers / diff_id[7:])
            return removed


def _member(root: Path, name: str) -> Path:
    """A file named by the manifest, which must be inside the archive."""
    path = (root / name).resolve()
    if not str(path).startswith(str(root.resolve()) + os.sep) or not path.is_file():
        raise errors.InvalidParameter(f"invalid archive: no file {name!r}")
    return path


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirnames, filenames in os.walk(path):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total
