"""``docker commit``: an overlay upper directory as a layer tar in Docker's spelling, the new
image's config (dockerd's merge, history, empty layer), and the ``--change`` parser shared with
``docker import``."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from asyncstart import errors
from asyncstart.images.changes import apply_changes
from asyncstart.images.commit import layer_tar_from_upper, merge_config
from asyncstart.images.fake import FakeImageStore
from asyncstart.images.layers import EMPTY_LAYER
from asyncstart.images.save import write_save_archive
from asyncstart.images.store import ImageStore

pytestmark = pytest.mark.anyio

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="whiteouts (0/0 devices) and trusted.* xattrs need root"
)


def _members(upper: Path, **kwargs: Any) -> tuple[bytes, list[tarfile.TarInfo]]:
    out = io.BytesIO()
    count = layer_tar_from_upper(upper, out, **kwargs)
    data = out.getvalue()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    assert count == len(members)
    return data, members


def _write(path: Path, data: bytes = b"", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_an_unchanged_container_is_the_empty_layer(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    # What a start leaves in the upper dir: /etc and its empty mount points.
    for name in ("hostname", "hosts", "resolv.conf"):
        _write(upper / "etc" / name)
    data, members = _members(upper)
    assert members == [] and data == bytes(1024)


def test_files_links_modes_and_owners(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    _write(upper / "srv/app/run", b"#!/bin/sh\n", 0o4755)
    os.link(upper / "srv/app/run", upper / "srv/app/again")
    (upper / "srv/app/link").symlink_to("/srv/app/run")
    os.mkfifo(upper / "srv/fifo")
    os.chown(upper / "srv/app/run", 1000, 1001, follow_symlinks=False)
    os.chmod(upper / "srv/app/run", 0o4755)  # (chown dropped the set-uid bit)
    os.utime(upper / "srv/app/run", (1_700_000_000.7, 1_700_000_000.7))
    # /etc has a change of the container's: kept, the mount points still left out.
    _write(upper / "etc/hosts")
    _write(upper / "etc/hostname", b"written\n")  # not an empty placeholder: the container's
    _write(upper / "etc/app.conf", b"x=1\n")
    _, members = _members(upper)
    by_name = {m.name: m for m in members}
    assert [m.name for m in members] == [
        "etc", "etc/app.conf", "etc/hostname",
        "srv", "srv/app", "srv/app/again", "srv/app/link", "srv/app/run", "srv/fifo",
    ]  # fmt: skip
    run, again = by_name["srv/app/run"], by_name["srv/app/again"]
    assert again.isfile() and again.size == 10  # the first name in order carries the data
    assert run.islnk() and run.linkname == "srv/app/again"
    assert again.mode == 0o4755 and again.uid == 1000 and again.gid == 1001
    assert again.mtime == 1_700_000_000 and again.uname == ""
    assert by_name["srv/app/link"].issym() and by_name["srv/app/link"].linkname == "/srv/app/run"
    assert by_name["srv/fifo"].isfifo()
    assert by_name["etc"].isdir()


def test_owners_are_mapped_back_from_a_user_namespace(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    _write(upper / "f", b"x")
    os.chown(upper / "f", 100_000 + 5, 200_000 + 7)
    os.chown(upper, 100_000, 200_000)
    _, members = _members(upper, id_map=(100_000, 200_000, 65536))
    assert (members[0].uid, members[0].gid) == (5, 7)
    with pytest.raises(errors.SystemError, match="cannot be mapped"):
        _members(upper, id_map=(300_000, 300_000, 10))


@needs_root
def test_whiteouts_and_opaque_directories(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "data").mkdir(parents=True)
    os.mknod(upper / "data/gone", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    (upper / "data/fresh").mkdir(mode=0o750)
    os.chmod(upper / "data/fresh", 0o750)
    os.setxattr(upper / "data/fresh", "trusted.overlay.opaque", b"y")
    _write(upper / "data/fresh/only", b"new")
    os.setxattr(upper / "data/fresh/only", "trusted.overlay.origin", b"junk")
    os.mknod(upper / "top", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    _, members = _members(upper)
    # In the order of the names on disk (``fresh`` before ``gone``), as Go's WalkDir.
    assert [m.name for m in members] == [
        "data", "data/fresh", "data/fresh/.wh..wh..opq", "data/fresh/only", "data/.wh.gone",
        ".wh.top",
    ]  # fmt: skip
    by_name = {m.name: m for m in members}
    whiteout = by_name["data/.wh.gone"]
    assert whiteout.isfile() and whiteout.size == 0 and whiteout.mode == 0o600
    opaque = by_name["data/fresh/.wh..wh..opq"]
    assert opaque.isfile() and opaque.size == 0 and opaque.mode == 0o750
    assert all(not m.pax_headers for m in members), "no trusted.overlay.* xattr is archived"


def test_byte_order_and_depth(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    deep = upper.joinpath(*["d"] * 60)
    _write(deep / "leaf", b"1")
    _write(upper / "B", b"2")
    _write(upper / "a", b"3")
    names = [m.name for m in _members(upper)[1]]
    assert names[:2] == ["B", "a"]  # Go's WalkDir: byte order, upper case first
    assert names[-1].endswith("/leaf") and names[-1].count("/") == 60


# -- the config: dockerd's merge and NewChildImage -------------------------------------------------

CONTAINER = {
    "Hostname": "0123456789ab",
    "User": "app",
    "Env": ["PATH=/usr/bin:/bin", "MODE=dev"],
    "Cmd": ["/bin/sh", "-c", "echo hi > /srv/out"],
    "Entrypoint": None,
    "Image": "base:1",
    "WorkingDir": "/srv",
    "Labels": {"from": "container"},
    "ExposedPorts": {"80/tcp": {}},
    "Volumes": None,
    "StopSignal": "",
}


def test_merge_fills_what_the_request_leaves_unset() -> None:
    merged = merge_config({"Cmd": ["run"], "Env": ["MODE=prod"], "Labels": {"v": "1"},
                           "ExposedPorts": {"443/tcp": {}}}, CONTAINER)  # fmt: skip
    assert merged["Cmd"] == ["run"] and merged["Entrypoint"] is None
    assert merged["Env"] == ["MODE=prod", "PATH=/usr/bin:/bin"]
    assert merged["Labels"] == {"v": "1", "from": "container"}
    assert merged["ExposedPorts"] == {"443/tcp": {}, "80/tcp": {}}
    assert merged["User"] == "app" and merged["WorkingDir"] == "/srv"
    # An entrypoint of the request's keeps the container's command from coming back.
    assert merge_config({"Entrypoint": ["/e"]}, CONTAINER).get("Cmd") is None
    assert merge_config({}, CONTAINER)["Cmd"] == CONTAINER["Cmd"]


async def _base(tmp_path: Path, store: ImageStore) -> str:
    tar = tmp_path / "base.tar"
    with tarfile.open(tar, "w") as archive:
        for name in ("data/a", "data/dir/x", "srv/keep"):
            info = tarfile.TarInfo(name)
            info.size = 1
            archive.addfile(info, io.BytesIO(b"1"))
    return await store.import_(str(tar), repo="base", tag="1", changes=["CMD sh"])


async def test_commit_an_upper_directory(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "image")
    base = await _base(tmp_path, store)
    upper = tmp_path / "upper"
    _write(upper / "srv/out", b"hi\n")
    _write(upper / "etc/hosts")  # the start's mount point
    image_id = await store.commit(
        base, upper, None, container_id="f" * 64, container_config=CONTAINER,
        author="me <me@example>", comment="saved", repo="result", tag="v1",
        changes=["LABEL stage=done", "EXPOSE 8080", "ENV MODE=prod"],
    )  # fmt: skip
    assert store.resolve("result:v1") == image_id
    config = store.config(image_id)
    parent = store.config(base)
    assert config["rootfs"]["diff_ids"][:1] == parent["rootfs"]["diff_ids"]
    assert len(config["rootfs"]["diff_ids"]) == 2
    assert config["container"] == "f" * 64 and config["container_config"] == CONTAINER
    assert config["author"] == "me <me@example>" and config["os"] == "linux"
    assert config["architecture"] == parent["architecture"]
    entry = config["history"][-1]
    assert entry["created_by"] == "/bin/sh -c echo hi > /srv/out"
    assert entry["author"] == "me <me@example>" and entry["comment"] == "saved"
    assert "empty_layer" not in entry and entry["created"] == config["created"]
    assert config["history"][:-1] == parent["history"]
    image = config["config"]
    assert image["Labels"] == {"from": "container", "stage": "done"}
    assert image["ExposedPorts"] == {"80/tcp": {}, "8080/tcp": {}}
    assert image["Env"] == ["PATH=/usr/bin:/bin", "MODE=prod"]
    assert image["Cmd"] == CONTAINER["Cmd"] and image["Hostname"] == "0123456789ab"
    top = store.layer_paths(image_id)[-1]
    assert (top / "srv/out").read_bytes() == b"hi\n" and not (top / "etc").exists()
    rows = store.history("result:v1")
    assert rows[0]["Size"] == 3 and rows[0]["CreatedBy"] == entry["created_by"]


async def test_commit_of_no_change_adds_no_layer(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "image")
    base = await _base(tmp_path, store)
    upper = tmp_path / "upper"
    _write(upper / "etc/resolv.conf")
    for layer in (upper, None):
        image_id = await store.commit(base, layer, {"Cmd": ["other"]}, container_id="a" * 64,
                                      container_config=CONTAINER)  # fmt: skip
        config = store.config(image_id)
        assert config["rootfs"]["diff_ids"] == store.config(base)["rootfs"]["diff_ids"]
        assert config["history"][-1]["empty_layer"] is True
        assert config["config"]["Cmd"] == ["other"]
        assert config["config"]["Env"] == CONTAINER["Env"]
    assert not store.layers.joinpath(EMPTY_LAYER.removeprefix("sha256:")).exists()


async def test_a_refused_commit_leaves_nothing(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "image")
    base = await _base(tmp_path, store)
    upper = tmp_path / "upper"
    _write(upper / "x", b"x")
    layers, configs = set(store.layers.iterdir()), set(store.configs.iterdir())
    with pytest.raises(errors.InvalidParameter, match="^RUN is not a valid change command$"):
        await store.commit(base, upper, container_id="a", container_config=CONTAINER,
                           changes=["RUN true"])  # fmt: skip
    with pytest.raises(errors.InvalidParameter, match="invalid reference format"):
        await store.commit(base, upper, container_id="a", container_config=CONTAINER,
                           repo="Bad..Name")  # fmt: skip
    with pytest.raises(errors.NotFound, match="No such image"):
        await store.commit("sha256:" + "e" * 64, upper, container_id="a",
                           container_config=CONTAINER)  # fmt: skip
    assert set(store.layers.iterdir()) == layers and set(store.configs.iterdir()) == configs
    assert not list((tmp_path / "image").glob(".commit-*"))


async def test_the_fake_store_commits_a_container_of_an_unknown_image(tmp_path: Path) -> None:
    store = FakeImageStore(tmp_path / "image")
    image_id = await store.commit("busybox", None, container_id="c" * 64,
                                  container_config=CONTAINER, repo="snap")  # fmt: skip
    config = store.inspect("snap")
    assert config["Id"] == image_id and config["RootFS"]["Layers"] == []
    assert store.history("snap")[0]["CreatedBy"] == "/bin/sh -c echo hi > /srv/out"


@needs_root
async def test_commit_save_load_round_trip_with_whiteouts(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "image")
    base = await _base(tmp_path, store)
    upper = tmp_path / "upper"
    (upper / "data/dir").mkdir(parents=True)
    os.mknod(upper / "data/a", stat.S_IFCHR, os.makedev(0, 0))
    os.setxattr(upper / "data/dir", "trusted.overlay.opaque", b"y")
    _write(upper / "data/dir/y", b"y")
    image_id = await store.commit(base, upper, container_id="d" * 64,
                                  container_config=CONTAINER, repo="snap", tag="1")  # fmt: skip
    top = store.layer_paths(image_id)[-1]
    assert stat.S_ISCHR(os.lstat(top / "data/a").st_mode)
    assert os.getxattr(top / "data/dir", "trusted.overlay.opaque") == b"y"
    archive = tmp_path / "saved.tar"
    with archive.open("wb") as out:
        write_save_archive(store, store.save_targets(["snap:1"]), out)
    other = ImageStore(tmp_path / "other")
    assert await other.load(str(archive)) == ["Loaded image: snap:1"]
    assert other.resolve("snap:1") == image_id
    loaded = other.layer_paths(image_id)[-1]
    assert os.getxattr(loaded / "data/dir", "trusted.overlay.opaque") == b"y"


# -- the --change parser -------------------------------------------------------------------------

BASE = {"Env": ["PATH=/bin", "HOME=/root"], "Cmd": ["sh"], "WorkingDir": "/srv",
        "Labels": {"old": "1"}, "Shell": None}  # fmt: skip

CHANGES: list[tuple[list[str], dict[str, Any]]] = [
    (["CMD echo $HOME"], {"Cmd": ["/bin/sh", "-c", "echo $HOME"]}),
    (['CMD ["a", "b c"]'], {"Cmd": ["a", "b c"]}),
    (["CMD []"], {"Cmd": []}),
    (["CMD [not json"], {"Cmd": ["/bin/sh", "-c", "[not json"]}),
    (['ENTRYPOINT ["/e"]'], {"Entrypoint": ["/e"], "Cmd": None}),
    (["CMD x", "ENTRYPOINT /e"],
     {"Entrypoint": ["/bin/sh", "-c", "/e"], "Cmd": ["/bin/sh", "-c", "x"]}),
    (["ENTRYPOINT []"], {"Entrypoint": None, "Cmd": None}),
    (["ENV A=1 B=\"two words\" C=$HOME/x D=${NOPE:-dflt} E='$HOME'"],
     {"Env": ["PATH=/bin", "HOME=/root", "A=1", "B=two words", "C=/root/x", "D=dflt", "E=$HOME"]}),
    (["ENV PATH=$PATH:/opt"], {"Env": ["PATH=/bin:/opt", "HOME=/root"]}),
    (["ENV LEGACY a value  here"], {"Env": ["PATH=/bin", "HOME=/root", "LEGACY=a value  here"]}),
    (["LABEL a=b \"c d\"=e\\ f", "LABEL legacy x y"],
     {"Labels": {"old": "1", "a": "b", "c d": "e f", "legacy": "x y"}}),
    (["EXPOSE 80 53/udp 7000-7001/TCP"],
     {"ExposedPorts": {"80/tcp": {}, "53/udp": {}, "7000/tcp": {}, "7001/tcp": {}}}),
    (["VOLUME /a /b", 'VOLUME ["/c d"]'], {"Volumes": {"/a": {}, "/b": {}, "/c d": {}}}),
    (["WORKDIR rel/../sub", "WORKDIR //abs/"], {"WorkingDir": "/abs"}),
    (["WORKDIR rel/../sub"], {"WorkingDir": "/srv/sub"}),
    (["USER 1000:1000"], {"User": "1000:1000"}),
    (["STOPSIGNAL SIGUSR1"], {"StopSignal": "SIGUSR1"}),
    (["onbuild RUN make"], {"OnBuild": ["RUN make"]}),
    (["HEALTHCHECK --interval=1m30s --timeout=5s --retries=2 CMD [\"check\"]"],
     {"Healthcheck": {"Test": ["CMD", "check"], "Interval": 90 * 10**9, "Timeout": 5 * 10**9,
                      "Retries": 2}}),
    (["HEALTHCHECK NONE"], {"Healthcheck": {"Test": ["NONE"]}}),
    (["# a comment", "", "USER a \\", "  b"], {"User": "a   b"}),
    ([], {}),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "expected"), CHANGES)
def test_each_instruction(changes: list[str], expected: dict[str, Any]) -> None:
    before = json.dumps(BASE)
    result = apply_changes(BASE, changes)
    assert json.dumps(BASE) == before, "the given config is not changed"
    assert result == {**BASE, **expected}


REFUSED: list[tuple[list[str], str]] = [
    (["RUN make"], "RUN is not a valid change command"),
    (["FROM scratch"], "FROM is not a valid change command"),
    (["USER a", "copy a b"], "copy is not a valid change command"),
    ([""], "file with no instructions"),
    (["ENV"], "ENV requires at least one argument"),
    (["ENV A"], "ENV must have two arguments"),
    (["ENV A=1 B"], "Syntax error - can't find = in \"B\". Must be of the form: name=value"),
    (["LABEL =x"], "LABEL names can not be blank"),
    (["EXPOSE"], "EXPOSE requires at least one argument"),
    (["EXPOSE 80/icmp"], "invalid proto: icmp"),
    (["EXPOSE http"], "invalid containerPort: http"),
    (["VOLUME"], "VOLUME requires at least one argument"),
    (["WORKDIR"], "WORKDIR requires exactly one argument"),
    (["USER"], "USER requires exactly one argument"),
    (["STOPSIGNAL"], "STOPSIGNAL requires exactly one argument"),
    (["STOPSIGNAL SIGNOPE"], "Invalid signal: SIGNOPE"),
    (["ONBUILD"], "ONBUILD requires at least one argument"),
    (["ONBUILD ONBUILD RUN x"], "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
    (["ONBUILD FROM x"], "FROM isn't allowed as an ONBUILD trigger"),
    (["CMD --privileged x"], "unknown flag: --privileged"),
    (['CMD ["a", 1]'], "when using JSON array syntax, arrays must be comprised of strings only"),
    (["HEALTHCHECK"], "HEALTHCHECK requires at least one argument"),
    (["HEALTHCHECK NONE x"], "HEALTHCHECK NONE takes no arguments"),
    (["HEALTHCHECK PING x"], 'Unknown type "PING" in HEALTHCHECK (try CMD)'),
    (["HEALTHCHECK CMD"], "Missing command after HEALTHCHECK CMD"),
    (["HEALTHCHECK --interval=10 CMD x"], 'time: missing unit in duration "10"'),
    (["HEALTHCHECK --interval=1us CMD x"], 'Interval "interval" cannot be less than 1ms'),
    (["HEALTHCHECK --retries=-1 CMD x"], "--retries cannot be negative (-1)"),
    (["HEALTHCHECK --every=1s CMD x"], "unknown flag: --every"),
    (["ENV A=${B"], "syntax error: missing '}'"),
    (["ENV A=${:x}"], "syntax error: bad substitution"),
    (['ENV A="${B:?must be set}"'], "B: must be set"),
    (["ENV A=${HOME:?}", "ENV A=${UNSET?}"], "UNSET: is not allowed to be unset"),
    (["ENV A=\"open"], "unexpected end of statement while looking for matching double-quote"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "message"), REFUSED)
def test_refused_changes(changes: list[str], message: str) -> None:
    with pytest.raises(errors.InvalidParameter) as info:
        apply_changes(BASE, changes)
    assert str(info.value) == message and info.value.status == 400


async def test_import_accepts_every_change_dockerd_does(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "image")
    tar = tmp_path / "t.tar"
    with tarfile.open(tar, "w") as archive:
        archive.addfile(tarfile.TarInfo("empty"), io.BytesIO(b""))
    image_id = await store.import_(str(tar), changes=["LABEL a=b", "EXPOSE 80", "VOLUME /data"])
    config = store.inspect(image_id)["Config"]
    assert config["Labels"] == {"a": "b"} and config["ExposedPorts"] == {"80/tcp": {}}
    assert config["Volumes"] == {"/data": {}}
    assert config["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def test_shell_form_uses_the_configs_shell_and_trims_expand() -> None:
    config = {"Shell": ["/bin/bash", "-lc"], "Env": ["P=/usr/local/bin"]}
    result = apply_changes(config, ["CMD run it", "ENV A=${P#/usr} B=${P##*/} C=${P%/*}"])
    assert result["Cmd"] == ["/bin/bash", "-lc", "run it"]
    assert result["Env"] == ["P=/usr/local/bin", "A=/local/bin", "B=bin", "C=/usr/local"]
