"""``docker save``: the archive's layout, layers that are their diff IDs, and the round trip
through ``docker load``; the layer store's kept tars."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from asyncstart import errors
from asyncstart.images.save import iter_save_archive, write_save_archive
from asyncstart.images.store import ImageStore, RemovalPlan

pytestmark = pytest.mark.anyio


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            archive.addfile(info, io.BytesIO(data))
    return path


async def _two_images(tmp_path: Path, store: ImageStore) -> tuple[str, str, str]:
    """``app:1`` and ``app:2`` share a layer (one tarball, other changes); ``tool`` has its
    own."""
    shared = _tar(tmp_path / "shared.tar", {"bin/app": b"#!app", "etc/motd": b"hello\n"})
    one = await store.import_(str(shared), repo="app", tag="1", changes=["CMD app"])
    two = await store.import_(str(shared), repo="app", tag="2", changes=["LABEL v=2"])
    own = _tar(tmp_path / "tool.tar", {"bin/tool": b"#!tool" * 1000})
    tool = await store.import_(str(own), repo="registry.example:5000/team/tool")
    return one, two, tool


def _read(archive: bytes) -> tuple[list[tarfile.TarInfo], dict[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = tar.getmembers()
        data = {m.name: tar.extractfile(m).read() for m in members if m.isfile()}  # type: ignore[union-attr]
    return members, data


def _save(store: ImageStore, names: list[str]) -> bytes:
    out = io.BytesIO()
    write_save_archive(store, store.save_targets(names), out)
    return out.getvalue()


async def test_the_archive_is_docker_25s_layout(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "image")
    one, two, tool = await _two_images(tmp_path, store)
    archive = _save(store, ["app:1", "app:2", "registry.example:5000/team/tool"])
    assert archive.endswith(bytes(1024)) and len(archive) % 512 == 0
    members, data = _read(archive)
    names = [m.name for m in members]
    blobs = sorted(n for n in names if n.startswith("blobs/sha256/") and n != "blobs/sha256")
    assert names == ["blobs", "blobs/sha256", *blobs,
                     "index.json", "manifest.json", "oci-layout", "repositories"]  # fmt: skip
    assert all(m.uid == 0 and m.gid == 0 for m in members)
    assert data["oci-layout"] == b'{"imageLayoutVersion": "1.0.0"}'

    manifest = json.loads(data["manifest.json"])
    assert [entry["RepoTags"] for entry in manifest] == [
        ["app:1"], ["app:2"], ["registry.example:5000/team/tool:latest"]]  # fmt: skip
    for entry, image_id in zip(manifest, (one, two, tool), strict=True):
        config = data[entry["Config"]]
        assert "sha256:" + hashlib.sha256(config).hexdigest() == image_id
        assert entry["Config"] == "blobs/sha256/" + image_id.removeprefix("sha256:")
        diff_ids = json.loads(config)["rootfs"]["diff_ids"]
        assert entry["Layers"] == ["blobs/sha256/" + d.removeprefix("sha256:") for d in diff_ids]
        for layer, diff_id in zip(entry["Layers"], diff_ids, strict=True):
            assert "sha256:" + hashlib.sha256(data[layer]).hexdigest() == diff_id
    # The layer app:1 and app:2 share is written once.
    assert manifest[0]["Layers"] == manifest[1]["Layers"]
    assert names.count(manifest[0]["Layers"][0]) == 1
    # Three configs, two layers, three OCI manifests.
    assert len(blobs) == 8

    repositories = json.loads(data["repositories"])
    top = manifest[0]["Layers"][0].rpartition("/")[2]
    assert repositories["app"] == {"1": top, "2": top}
    assert set(repositories) == {"app", "registry.example:5000/team/tool"}

    index = json.loads(data["index.json"])
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    annotations = [d["annotations"] for d in index["manifests"]]
    assert annotations[0] == {"io.containerd.image.name": "docker.io/library/app:1",
                              "org.opencontainers.image.ref.name": "1"}  # fmt: skip
    tool_name = annotations[2]["io.containerd.image.name"]
    assert tool_name == "registry.example:5000/team/tool:latest"
    for descriptor, entry in zip(index["manifests"], manifest, strict=True):
        blob = data["blobs/sha256/" + descriptor["digest"].removeprefix("sha256:")]
        assert len(blob) == descriptor["size"]
        oci = json.loads(blob)
        assert oci["config"]["digest"] == "sha256:" + entry["Config"].rpartition("/")[2]
        assert [layer["digest"].removeprefix("sha256:") for layer in oci["layers"]] == [
            layer.rpartition("/")[2] for layer in entry["Layers"]
        ]


async def test_save_then_load_gives_the_same_images(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "image")
    one, two, tool = await _two_images(tmp_path, store)
    archive = tmp_path / "saved.tar"
    archive.write_bytes(_save(store, ["app", "registry.example:5000/team/tool:latest"]))

    other = ImageStore(tmp_path / "other")
    loaded = await other.load(str(archive))
    assert loaded == ["Loaded image: app:1", "Loaded image: app:2",
                      "Loaded image: registry.example:5000/team/tool:latest"]  # fmt: skip
    assert other.resolve("app:1") == one and other.resolve("app:2") == two
    assert other.resolve("registry.example:5000/team/tool") == tool
    assert other.config_bytes(one) == store.config_bytes(one)
    layer = other.layer_paths(one)[0]
    assert (layer / "bin/app").read_bytes() == b"#!app"
    # The loaded store kept the very tars, so it saves the same archive again.
    assert _save(other, ["app", "registry.example:5000/team/tool"]) == archive.read_bytes()


async def test_names_ids_and_missing_images(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "image")
    one, two, _ = await _two_images(tmp_path, store)
    # A repository alone is all its tags; an ID records no name; each image once.
    assert store.save_targets(["app"]) == [(one, ["app:1"]), (two, ["app:2"])]
    assert store.save_targets([one, "app:1", one[7:19]]) == [(one, ["app:1"])]
    assert store.save_targets(["docker.io/library/app:2"]) == [(two, ["app:2"])]
    _, data = _read(_save(store, [one]))
    assert json.loads(data["manifest.json"])[0]["RepoTags"] is None
    assert "repositories" not in data
    assert "annotations" not in json.loads(data["index.json"])["manifests"][0]
    with pytest.raises(errors.NotFound, match="^No such image: app:3$"):
        store.save_targets(["app:1", "app:3"])
    with pytest.raises(errors.NotFound, match="^No such image: nothing:latest$"):
        store.save_targets(["nothing"])
    with pytest.raises(errors.InvalidParameter, match="invalid reference format"):
        store.save_targets(["Bad..Name"])


async def test_the_async_stream_is_the_same_archive(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "image")
    await _two_images(tmp_path, store)
    # A layer over 1 MiB, streamed in chunks.
    big = _tar(tmp_path / "big.tar", {"blob": os.urandom(3 << 20)})
    await store.import_(str(big), repo="big")
    names = ["app", "big"]
    chunks = [chunk async for chunk in await store.save(names)]
    assert len(chunks) > 2 and all(len(c) <= (1 << 20) + (2 << 20) for c in chunks)
    assert b"".join(chunks) == _save(store, names)
    with pytest.raises(errors.NotFound):
        await store.save(["missing:1"])  # raised before any byte is streamed


async def test_an_abandoned_stream_closes_its_files(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "image")
    await _two_images(tmp_path, store)
    plan = store.plan_save(["app"])
    stream = iter_save_archive(plan)
    next(stream)
    stream.close()
    assert all(file.closed for file in plan.layers.values())


async def test_a_layer_without_its_tar_cannot_be_saved(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "image")
    one, _, _ = await _two_images(tmp_path, store)
    diff_id = store.config(one)["rootfs"]["diff_ids"][0]
    store.layer_tar(diff_id).unlink()  # as a layer stored before tars were kept
    with pytest.raises(errors.SystemError, match="cannot save app:1: its layer sha256:") as info:
        store.plan_save(["app:1"])
    assert info.value.status == 500
    # Importing the same tarball again gives the layer its tar back.
    await store.import_(str(tmp_path / "shared.tar"))
    assert store.layer_tar(diff_id).is_file()
    assert _save(store, ["app:1"])


async def test_kept_tars_are_the_bytes_hashed(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "image")
    source = _tar(tmp_path / "root.tar", {"f": b"one"})
    image_id = await store.import_(str(source))
    diff_id = store.config(image_id)["rootfs"]["diff_ids"][0]
    kept = store.layer_tar(diff_id)
    assert kept.parent == tmp_path / "image" / "layer-tars"
    assert kept.read_bytes() == source.read_bytes()
    assert kept.stat().st_ino != source.stat().st_ino  # the caller's file: copied, never linked
    source.write_bytes(b"changed")
    assert "sha256:" + hashlib.sha256(kept.read_bytes()).hexdigest() == diff_id
    # Removing the image removes the tar with the layer.
    store.remove(image_id, lambda _id, _names: RemovalPlan((), delete=True))
    assert not kept.exists() and list(store.layers.iterdir()) == []


async def test_a_failed_load_keeps_no_tar_and_sweep_drops_strays(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "image")
    layer = _tar(tmp_path / "layer.tar", {"f": b"x"}).read_bytes()
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}})
    archive = tmp_path / "bad.tar"
    manifest = [{"Config": "c.json", "RepoTags": ["bad:1"], "Layers": ["l.tar"]}]
    with tarfile.open(archive, "w") as tar:
        for name, data in {"c.json": config.encode(), "l.tar": layer,
                           "manifest.json": json.dumps(manifest).encode()}.items():  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(errors.InvalidParameter, match="the config says"):
        await store.load(str(archive))
    tars = tmp_path / "image" / "layer-tars"
    assert list(tars.iterdir()) == [] and list(store.layers.iterdir()) == []
    (tars / ("a" * 64 + ".tar")).write_bytes(b"stray")
    (tars / ".keep-x.tmp").write_bytes(b"half")
    store.sweep()
    assert list(tars.iterdir()) == []
