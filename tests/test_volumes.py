"""The local volume store: dockerd's answers, real files under tmp_path, hostile names and
image content."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import anyio
import pytest

from asyncstart import errors
from asyncstart.volumes import ANONYMOUS_LABEL, VolumeStore, copy_up, resolve_in_root

pytestmark = pytest.mark.anyio

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)")
NOBODY = (65534, 65534)


@pytest.fixture
def store(tmp_path: Path) -> VolumeStore:
    return VolumeStore(tmp_path / "volumes", fsync=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


async def test_create_answers_dockerds_volume(store: VolumeStore) -> None:
    volume = await store.create("data", labels={"tier": "db"})
    mountpoint = store.root / "data" / "_data"
    assert volume == {
        "CreatedAt": volume["CreatedAt"], "Driver": "local", "Labels": {"tier": "db"},
        "Mountpoint": str(mountpoint), "Name": "data", "Options": None, "Scope": "local",
    }  # fmt: skip
    assert RFC3339.fullmatch(volume["CreatedAt"])
    assert mountpoint.is_dir() and mode(mountpoint) == 0o755
    # No other host user reaches a volume's content.
    assert mode(store.root) == 0o700 and mode(store.root / "data") == 0o700
    assert await store.get("data") == volume
    # Labels and options as given: null stays null, {} stays {}.
    assert (await store.create("bare"))["Labels"] is None
    empty = await store.create("empty", driver_opts={}, labels={})
    assert (empty["Labels"], empty["Options"]) == ({}, {})


async def test_creating_an_existing_name_returns_it_as_it_is(store: VolumeStore) -> None:
    first = await store.create("data", labels={"a": "1"})
    (store.root / "data" / "_data" / "kept").write_text("x")
    again = await store.create("data", labels={"b": "2"})
    assert again == first
    assert (store.root / "data" / "_data" / "kept").read_text() == "x"


async def test_concurrent_creates_of_one_name_make_one_volume(store: VolumeStore) -> None:
    results: list[dict[str, object]] = []

    async def create(index: int) -> None:
        results.append(await store.create("shared", labels={"by": str(index)}))

    async with anyio.create_task_group() as tg:
        for index in range(8):
            tg.start_soon(create, index)
    assert len({str(result) for result in results}) == 1
    assert [p.name for p in store.root.iterdir()] == ["shared"]


async def test_anonymous_volumes(store: VolumeStore) -> None:
    volume = await store.create()
    assert re.fullmatch(r"[0-9a-f]{64}", volume["Name"])
    assert volume["Labels"] == {ANONYMOUS_LABEL: ""}
    named = await store.create("f" * 64, labels={"x": "y"}, anonymous=True)
    assert named["Labels"] == {"x": "y", ANONYMOUS_LABEL: ""}


async def test_another_driver_is_dockerds_plugin_not_found(store: VolumeStore) -> None:
    with pytest.raises(errors.NotFound) as caught:
        await store.create("data", driver="nfs")
    assert str(caught.value) == (
        'create data: error looking up volume plugin nfs: plugin "nfs" not found'
    )
    assert not store.root.exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../x", '"../x" includes invalid characters for a local volume name, only '
                 '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
                 "directory, use absolute path"),
        ("a/b", '"a/b" includes invalid characters'),
        (".hidden", '".hidden" includes invalid characters'),
        ("..", '".." includes invalid characters'),
        ("x", "volume name is too short, names should be at least two alphanumeric characters"),
    ],
)  # fmt: skip
async def test_names_that_could_escape_are_refused(
    store: VolumeStore, tmp_path: Path, name: str, message: str
) -> None:
    with pytest.raises(errors.InvalidParameter) as caught:
        await store.create(name)
    assert str(caught.value).startswith(f"create {name}: {message}")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with pytest.raises(errors.NotFound, match=re.escape(f"get {name}: no such volume")):
        await store.get(name)
    with pytest.raises(errors.NotFound):
        store.mountpoint(name)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"color": "red"}, 'invalid option: "color"'),
        ({"size": "10G"}, "quota size requested but no quota support"),
        ({"type": "nfs"}, 'missing required option: "device"'),
        ({"o": "addr=1.2.3.4"}, 'missing required option: "device"'),
        ({"type": "nfs", "device": ":/export", "o": "addr=1.2.3.4"},
         "asyncstart's local volume driver does not mount devices or network file systems"),
    ],
)  # fmt: skip
async def test_driver_options_are_checked_then_refused(
    store: VolumeStore, options: dict[str, str], message: str
) -> None:
    with pytest.raises(errors.InvalidParameter) as caught:
        await store.create("data", driver_opts=options)
    assert str(caught.value).startswith(f"create data: {message}")
    assert not (store.root / "data").exists()


async def test_list_and_its_filters(store: VolumeStore) -> None:
    await store.create("web-data", labels={"app": "web", "tier": "front"})
    await store.create("db-data", labels={"app": "db"})
    anonymous = (await store.create())["Name"]

    async def names(filters: dict[str, list[str]] | None = None, **kwargs: object) -> list[str]:
        return [v["Name"] for v in await store.list(filters, **kwargs)]  # type: ignore[arg-type]

    assert await names() == sorted(["web-data", "db-data", anonymous])
    assert await names({"name": ["data"]}) == ["db-data", "web-data"]
    assert await names({"name": ["^db"]}) == ["db-data"]  # a regular expression, as dockerd
    assert await names({"name": ["[", "web-data"]}) == ["web-data"]  # a bad one matches nothing
    assert await names({"driver": ["local"]}) == await names()
    assert await names({"driver": ["nfs"]}) == []
    assert await names({"label": ["app"]}) == ["db-data", "web-data"]
    assert await names({"label": ["app=web"]}) == ["web-data"]
    assert await names({"label": ["app", "tier"]}) == ["web-data"]  # every label must match
    assert await names({"label": [ANONYMOUS_LABEL]}) == [anonymous]
    in_use = {"web-data"}
    assert await names({"dangling": ["true"]}, in_use=in_use) == sorted(["db-data", anonymous])
    assert await names({"dangling": ["0"]}, in_use=in_use) == ["web-data"]
    # The older {"key": {"value": true}} form too.
    assert await names({"label": {"app=db": True}}) == ["db-data"]  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"color": ["red"]}, "invalid filter 'color'"),
        ({"label!": ["a"]}, "invalid filter 'label!'"),  # a prune filter only
        ({"dangling": ["maybe"]}, "invalid filter 'dangling=[maybe]'"),
        ({"dangling": ["true", "false"]}, "invalid filter 'dangling=[false true]'"),
        ({"dangling": []}, "invalid filter 'dangling'"),
    ],
)
async def test_bad_list_filters_are_dockerds_400(
    store: VolumeStore, filters: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(errors.InvalidParameter) as caught:
        await store.list(filters)
    assert str(caught.value) == message


async def test_remove(store: VolumeStore) -> None:
    await store.create("data")
    with pytest.raises(errors.Conflict) as caught:
        await store.remove("data", in_use={"data": ["c1" * 32, "c2" * 32]}, force=True)
    assert str(caught.value) == f"remove data: volume is in use - [{'c1' * 32}, {'c2' * 32}]"
    assert caught.value.status == 409
    await store.remove("data", in_use={"data": []})
    assert not (store.root / "data").exists()
    assert list(store.root.iterdir()) == []
    with pytest.raises(errors.NotFound) as missing:
        await store.remove("data", in_use={})
    assert str(missing.value) == "get data: no such volume"
    await store.remove("data", force=True, in_use={})
    await store.remove("../etc", force=True, in_use={})


async def test_remove_deletes_what_links_point_to_never(store: VolumeStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    data = Path((await store.create("data"))["Mountpoint"])
    (data / "escape").symlink_to(outside)
    (data / "file").symlink_to(outside / "precious")
    await store.remove("data", in_use={})
    assert (outside / "precious").read_text() == "keep"


async def test_prune_takes_unused_anonymous_volumes_only(store: VolumeStore) -> None:
    named = (await store.create("named"))["Name"]
    idle = (await store.create())["Name"]
    used = (await store.create())["Name"]
    labelled = (await store.create(labels={"keep": "yes"}))["Name"]
    (Path((await store.get(idle))["Mountpoint"]) / "f").write_bytes(b"x" * 1000)
    removed, reclaimed = await store.prune({"label!": ["keep=yes"]}, in_use={used})
    assert (removed, reclaimed) == ([idle], 1000)
    left = {v["Name"] for v in await store.list()}
    assert left == {named, used, labelled}
    assert await store.prune(None, in_use={used}) == ([labelled], 0)
    assert await store.prune({"all": ["true"]}, in_use={used}) == ([named], 0)
    assert [v["Name"] for v in await store.list()] == [used]


async def test_prune_label_filters(store: VolumeStore) -> None:
    await store.create("aa", labels={"env": "dev"})
    await store.create("bb", labels={"env": "prod"})
    await store.create("cc")
    assert await store.prune({"all": ["1"], "label": ["env=dev"]}) == (["aa"], 0)
    assert await store.prune({"all": ["True"], "label!": ["env"]}) == (["cc"], 0)


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"all": ["yes"]},
         "invalid filter 'all': strconv.ParseBool: parsing \"yes\": invalid syntax"),
        ({"all": ["1", "true"]}, "invalid filter 'all=[1 true]': only one value is expected"),
        ({"dangling": ["true"]}, "invalid filter 'dangling'"),
        ({"name": ["x"]}, "invalid filter 'name'"),
    ],
)  # fmt: skip
async def test_bad_prune_filters_are_dockerds_400(
    store: VolumeStore, filters: dict[str, list[str]], message: str
) -> None:
    await store.create()
    with pytest.raises(errors.InvalidParameter) as caught:
        await store.prune(filters)
    assert str(caught.value) == message
    assert len(await store.list()) == 1


async def test_usage_counts_each_inode_once(store: VolumeStore) -> None:
    data = Path((await store.create("data"))["Mountpoint"])
    (data / "sub").mkdir()
    (data / "sub" / "a").write_bytes(b"a" * 300)
    os.link(data / "sub" / "a", data / "b")
    (data / "link").symlink_to("sub/a")
    assert await store.usage("data") == 300 + len("sub/a")
    with pytest.raises(errors.NotFound):
        await store.usage("gone")


async def test_a_garbled_metadata_file_does_not_hide_the_others(store: VolumeStore) -> None:
    await store.create("good", labels={"a": "b"})
    await store.create("torn", labels={"anonymous": "maybe"})
    (store.root / "torn" / "volume.json").write_bytes(b'{"CreatedAt": 12, "Lab')
    (store.root / "junk").mkdir()  # neither _data nor metadata: not a volume
    (store.root / "afile").write_text("")
    (store.root / ".trash-old-1234").mkdir()
    volumes = {v["Name"]: v for v in await store.list()}
    assert set(volumes) == {"good", "torn"}
    assert volumes["torn"]["Labels"] is None and RFC3339.fullmatch(volumes["torn"]["CreatedAt"])
    assert volumes["good"]["Labels"] == {"a": "b"}
    await store.cleanup()
    assert not (store.root / ".trash-old-1234").exists()


async def test_a_volume_directory_that_is_a_link_is_not_a_volume(
    store: VolumeStore, tmp_path: Path
) -> None:
    await store.create("real")
    outside = tmp_path / "outside"
    (outside / "_data").mkdir(parents=True)
    (store.root / "fake").symlink_to(outside)
    assert [v["Name"] for v in await store.list()] == ["real"]
    with pytest.raises(errors.NotFound):
        await store.get("fake")
    await store.remove("fake", force=True, in_use={})
    assert (outside / "_data").is_dir()


async def test_a_volumes_root_that_is_a_link_is_refused_not_followed(tmp_path: Path) -> None:
    """A local user who swapped the volumes' directory for a link while the daemon was down
    got a bare 500 "internal server error" (the OSError escaped the driver)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "volumes").symlink_to(elsewhere)
    store = VolumeStore(tmp_path / "volumes", fsync=False)
    with pytest.raises(errors.SystemError, match="error while creating volume root path"):
        await store.create("v2")
    assert list(elsewhere.iterdir()) == []


async def test_user_namespaces_own_the_data(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("chown needs root")
    store = VolumeStore(tmp_path / "volumes", fsync=False, root_ids=(100000, 100000))
    data = Path((await store.create("data"))["Mountpoint"])
    assert (data.stat().st_uid, data.stat().st_gid) == (100000, 100000)
    assert mode(store.root) == 0o710 and store.root.stat().st_gid == 100000
    assert mode(store.root / "data") == 0o710


# -- copy-up --------------------------------------------------------------------------------


ROOTFS = "rootfs"
APP = "/var/lib/app"


def image_tree(root: Path) -> Path:
    source = root / ROOTFS / "var" / "lib" / "app"
    (source / "conf" / "deep").mkdir(parents=True)
    (source / "conf" / "deep" / "settings").write_text("debug = false\n")
    (source / "run.sh").write_text("#!/bin/sh\n")
    (source / "run.sh").chmod(0o4755)
    (source / "conf").chmod(0o750)
    (source / "passwd").symlink_to("/etc/passwd")
    (source / "up").symlink_to("../../../../../../../../etc")
    os.mkfifo(source / "pipe", 0o640)
    os.utime(source / "run.sh", (1_000_000, 1_000_000))
    source.chmod(0o751)
    return source


async def test_populate_copies_the_image_content(store: VolumeStore, tmp_path: Path) -> None:
    source = image_tree(tmp_path)
    if os.getuid() == 0:
        os.chown(source / "conf" / "deep" / "settings", *NOBODY)
        os.chown(source, 1234, 5678)
        os.chown(source / "run.sh", 0, 0)
        (source / "run.sh").chmod(0o4755)  # (a chown clears set-id bits)
        os.chown(source / "passwd", *NOBODY, follow_symlinks=False)
    data = Path((await store.create("app"))["Mountpoint"])
    assert await store.populate("app", tmp_path / ROOTFS, APP)
    assert (data / "conf" / "deep" / "settings").read_text() == "debug = false\n"
    assert mode(data / "run.sh") == 0o4755 and mode(data / "conf") == 0o750
    assert (data / "run.sh").stat().st_mtime == 1_000_000
    assert mode(data) == 0o751  # the directory's own mode, as dockerd copies it
    assert stat.S_ISFIFO((data / "pipe").lstat().st_mode) and mode(data / "pipe") == 0o640
    # Links stay links, whatever they point to: nothing of the host is copied.
    assert os.readlink(data / "passwd") == "/etc/passwd"
    assert os.readlink(data / "up") == "../../../../../../../../etc"
    if os.getuid() == 0:
        assert (data.stat().st_uid, data.stat().st_gid) == (1234, 5678)
        settings = (data / "conf" / "deep" / "settings").stat()
        assert (settings.st_uid, settings.st_gid) == NOBODY
        assert (data / "passwd").lstat().st_uid == NOBODY[0]
    assert sorted(p.name for p in data.iterdir()) == ["conf", "passwd", "pipe", "run.sh", "up"]


async def test_populate_copies_extended_attributes(store: VolumeStore, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_text("x")
    try:
        os.setxattr(source / "f", "user.origin", b"image")
    except OSError:
        pytest.skip("no user extended attributes here")
    data = Path((await store.create("x1"))["Mountpoint"])
    assert await store.populate("x1", tmp_path, "/src")
    assert os.getxattr(data / "f", "user.origin") == b"image"


async def test_populate_leaves_a_non_empty_volume_alone(store: VolumeStore, tmp_path: Path) -> None:
    image_tree(tmp_path)
    data = Path((await store.create("app"))["Mountpoint"])
    (data / "mine").write_text("mine")
    assert not await store.populate("app", tmp_path / ROOTFS, APP)
    assert [p.name for p in data.iterdir()] == ["mine"]


async def test_populate_of_a_missing_or_linked_source_copies_nothing(
    store: VolumeStore, tmp_path: Path
) -> None:
    data = Path((await store.create("app"))["Mountpoint"])
    rootfs = tmp_path / ROOTFS
    rootfs.mkdir()
    assert not await store.populate("app", rootfs, "/nowhere")
    (rootfs / "file").write_text("x")
    assert not await store.populate("app", rootfs, "/file")
    (rootfs / "dangling").symlink_to("/does/not/exist")
    assert not await store.populate("app", rootfs, "/dangling")
    assert list(data.iterdir()) == []
    with pytest.raises(errors.NotFound):
        await store.populate("gone", rootfs, "/")


async def test_populate_follows_the_images_links_inside_its_root_only(
    store: VolumeStore, tmp_path: Path
) -> None:
    """An image whose path to the mount point goes through links to the host's directories
    (absolute or climbing out) gets what its own root has there, never the host's files."""
    rootfs = tmp_path / ROOTFS
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hostname").write_text("image's own")
    (rootfs / "abs").symlink_to("/etc")
    (rootfs / "climb").symlink_to("../../../../../../etc")
    (rootfs / "var").mkdir()
    (rootfs / "var" / "run").symlink_to("../run")
    (rootfs / "run" / "app").mkdir(parents=True)
    (rootfs / "run" / "app" / "pid").write_text("1")
    for name, destination in (("aa", "/abs"), ("bb", "/climb"), ("cc", "/abs/../climb/.")):
        data = Path((await store.create(name))["Mountpoint"])
        assert await store.populate(name, rootfs, destination)
        assert [p.name for p in data.iterdir()] == ["hostname"]
        assert (data / "hostname").read_text() == "image's own"
    data = Path((await store.create("run"))["Mountpoint"])
    assert await store.populate("run", rootfs, "/var/run/app")
    assert (data / "pid").read_text() == "1"


def test_resolve_in_root(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(OSError, match="too many levels"):
        resolve_in_root(tmp_path, "/loop/x")
    assert resolve_in_root(tmp_path, "/../../x/./y/..") == tmp_path / "x"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "up").symlink_to("../../..")
    assert resolve_in_root(tmp_path, "d/up/etc") == tmp_path / "etc"


def test_copy_up_leaves_device_nodes_and_sockets_out(tmp_path: Path) -> None:
    import socket

    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    target.mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(source / "sock"))
        if os.getuid() == 0:
            os.mknod(source / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        (source / "kept").write_text("k")
        assert copy_up(source, target)
    assert [p.name for p in target.iterdir()] == ["kept"]
