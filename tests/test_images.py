"""The image store: import with changes, inspect, tag, remove, and hostile archives refused."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from asyncstart import errors
from asyncstart.images.store import ImageStore, parse_reference
from asyncstart.rmi import ContainerUse, plan_removal

pytestmark = pytest.mark.anyio


def _rmi(
    store: ImageStore, reference: str, users: list[ContainerUse] | None = None, force: bool = False
) -> list[str]:
    """``docker rmi`` as the daemon does it: dockerd's policy applied by the store."""
    return store.remove(
        reference,
        lambda image_id, tags: plan_removal(reference, image_id, tags, users or [], force=force),
    )


def _tar(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w") as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def test_parse_reference() -> None:
    assert parse_reference("busybox") == ("busybox", "latest")
    assert parse_reference("busybox:1.36") == ("busybox", "1.36")
    assert parse_reference("localhost:5000/a/b") == ("localhost:5000/a/b", "latest")


async def test_import_inspect_tag_list_remove(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "image")
    tar = _tar(tmp_path / "root.tar", _file("bin/tool", b"#!"), _link("bin/alias", "/bin/tool"))
    image_id = await store.import_(
        str(tar),
        repo="tools",
        tag="1",
        changes=['CMD ["tool", "--go"]', "ENV MODE=fast", "WORKDIR /srv", "USER 1000"],
    )
    assert image_id.startswith("sha256:") and len(image_id) == 71
    info = store.inspect("tools:1")
    assert info["Id"] == image_id and info["RepoTags"] == ["tools:1"]
    assert info["Config"]["Cmd"] == ["tool", "--go"]
    assert info["Config"]["Env"] == ["MODE=fast"] and info["Config"]["WorkingDir"] == "/srv"
    assert info["Config"]["User"] == "1000"
    layer = store.layer_paths(image_id)[0]
    assert (layer / "bin/tool").read_bytes() == b"#!"
    assert os.readlink(layer / "bin/alias") == "/bin/tool"
    # The same tarball imported again is the same layer (content addressed).
    assert await store.import_(str(tar)) != image_id  # no changes: another config
    assert len(list(store.layers.iterdir())) == 1
    store.tag(image_id[:12], "tools", "stable")
    assert store.inspect("tools:stable")["Id"] == image_id
    assert {tuple(r["RepoTags"]) for r in store.list_images()} == {
        ("tools:1", "tools:stable"),
        (),
    }
    # One tag of several: only untagged, even while a container runs it.
    assert _rmi(store, "tools:stable", users=[("f" * 64, True)]) == ["Untagged: tools:stable"]
    store.tag(image_id, "tools", "stable")
    with pytest.raises(errors.Conflict, match="referenced in multiple repositories"):
        _rmi(store, image_id)
    _rmi(store, "tools:stable")
    with pytest.raises(errors.Conflict, match="being used by running container ffffffffffff"):
        _rmi(store, "tools:1", users=[("f" * 64, True)])
    with pytest.raises(errors.Conflict, match="is using its referenced image"):
        _rmi(store, "tools:1", users=[("f" * 64, False)])
    assert _rmi(store, "tools:1", users=[("f" * 64, False)], force=True) == ["Untagged: tools:1"]
    assert store.inspect(image_id)["RepoTags"] == []
    assert _rmi(store, image_id)[-1] == f"Deleted: {image_id}"
    with pytest.raises(errors.NotFound, match="^No such image: tools:1$"):
        store.inspect("tools:1")
    assert list(store.layers.iterdir()) != [], "the other image still uses the layer"


async def test_import_from_an_async_byte_stream_and_gzip(tmp_path: Path) -> None:
    import gzip

    store = ImageStore(tmp_path / "image")
    raw = _tar(tmp_path / "root.tar", _file("hello", b"hi")).read_bytes()
    packed = gzip.compress(raw)

    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(packed), 100):
            yield packed[i : i + 100]

    image_id = await store.import_(chunks(), repo="hello")
    assert (store.layer_paths(image_id)[0] / "hello").read_bytes() == b"hi"


def _device(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info, None


HOSTILE = {
    "absolute": [_file("/etc/evil")],
    "dotdot": [_file("a/../../evil")],
    "through-symlink": [_link("escape", "/tmp"), _file("escape/evil")],
    "relative-symlink-parent": [_link("up", "../.."), _file("up/evil")],
    "hardlink-out": [_link("h", "../../etc/passwd", tarfile.LNKTYPE)],
    "hardlink-absolute": [_link("h", "/etc/passwd", tarfile.LNKTYPE)],
    "device": [_device("dev/mem")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_archives_are_refused_and_leave_nothing(tmp_path: Path, case: str) -> None:
    store = ImageStore(tmp_path / "image")
    tar = _tar(tmp_path / "bad.tar", _file("ok", b"fine"), *HOSTILE[case])
    with pytest.raises(errors.InvalidParameter, match="refusing to extract") as info:
        await store.import_(str(tar), repo="bad")
    assert info.value.status == 400
    assert list(store.layers.iterdir()) == [] and list(store.configs.iterdir()) == []
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()
    with pytest.raises(errors.NotFound):
        store.resolve("bad")


async def test_garbage_is_a_clear_error(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "image")
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(errors.InvalidParameter, match="invalid tar archive"):
        await store.import_(str(tmp_path / "junk.tar"))
    with pytest.raises(errors.InvalidParameter, match="no such file"):
        await store.import_(str(tmp_path / "missing.tar"))
    with pytest.raises(errors.InvalidParameter, match="not a valid change command"):
        await store.import_(str(_tar(tmp_path / "t.tar", _file("f"))), changes=["RUN rm -rf /"])
    assert list(store.layers.iterdir()) == [] and list(store.configs.iterdir()) == []


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o777
    return info, None


@pytest.mark.parametrize("replacement", ["file", "dir"])
async def test_an_entry_never_writes_through_an_earlier_symlink(
    tmp_path: Path, replacement: str
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    (victim / "file").write_text("original")
    target = victim / "file" if replacement == "file" else victim
    second = _file("x", b"PWNED") if replacement == "file" else _dir("x")
    store = ImageStore(tmp_path / "image")
    tar = _tar(tmp_path / "evil.tar", _link("x", str(target)), second)
    image_id = await store.import_(str(tar))
    layer = store.layer_paths(image_id)[0]
    assert not (layer / "x").is_symlink(), "the later entry replaced the link"
    assert (victim / "file").read_text() == "original"
    assert victim.stat().st_mode & 0o777 == 0o700


async def test_a_whiteout_cannot_name_a_parent(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "image")
    tar = _tar(tmp_path / "wh.tar", _file("a/.wh..."))
    with pytest.raises(errors.InvalidParameter, match="not a valid whiteout"):
        await store.import_(str(tar))
    assert list(store.layers.iterdir()) == []


async def test_a_gzip_import_leaves_no_copy_beside_the_source(tmp_path: Path) -> None:
    import gzip

    store = ImageStore(tmp_path / "image")
    raw = _tar(tmp_path / "root.tar", _file("hello", b"hi")).read_bytes()
    source = tmp_path / "src" / "root.tar.gz"
    source.parent.mkdir()
    source.write_bytes(gzip.compress(raw))
    await store.import_(str(source), repo="hello")
    assert sorted(p.name for p in source.parent.iterdir()) == ["root.tar.gz"]


async def test_concurrent_imports_of_one_layer(tmp_path: Path) -> None:
    import anyio

    store = ImageStore(tmp_path / "image")
    tar = _tar(tmp_path / "root.tar", *[_file(f"f{i}", b"x" * 1000) for i in range(200)])
    results: list[str] = []

    async def one(n: int) -> None:
        results.append(await store.import_(str(tar), repo="same", tag=str(n)))

    async with anyio.create_task_group() as tg:
        for n in range(4):
            tg.start_soon(one, n)
    # Every import succeeds (the config's timestamp may differ), all share one layer.
    assert len(results) == 4 and len(list(store.layers.iterdir())) == 1
    assert sorted(store.resolve(f"same:{n}") for n in range(4)) == sorted(results)


def test_image_files_are_read_with_links_resolved_inside_the_root(tmp_path: Path) -> None:
    from asyncstart.steps import _read_inside

    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "lib" / "passwd").write_text("app:x:1000:1000::/:/bin/sh\n")
    os.symlink("/lib/passwd", root / "etc" / "passwd")  # absolute: a path in the image
    os.symlink("../lib/passwd", root / "etc" / "relative")
    (tmp_path / "host-secret").write_text("secret")
    os.symlink(str(tmp_path), root / "escape")
    assert _read_inside(str(root), "etc/passwd") == "app:x:1000:1000::/:/bin/sh\n"
    assert _read_inside(str(root), "etc/relative") == "app:x:1000:1000::/:/bin/sh\n"
    assert _read_inside(str(root), "escape/host-secret") is None
    assert _read_inside(str(root), "etc/missing") is None


def test_a_fifo_in_place_of_passwd_is_not_read(tmp_path: Path) -> None:
    from asyncstart.steps import _read_inside

    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    os.mkfifo(root / "etc" / "passwd")  # a container could leave this for its next start
    assert _read_inside(str(root), "etc/passwd") is None  # at once: nothing blocks


async def test_forced_rmi_of_a_name_a_running_container_uses_untags(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "image")
    image_id = await store.import_(str(_tar(tmp_path / "r.tar", _file("f"))), repo="app", tag="1")
    assert _rmi(store, "app:1", users=[("f" * 64, True)], force=True) == ["Untagged: app:1"]
    assert store.inspect(image_id)["RepoTags"] == []
