"""``docker cp``'s file system half (asyncstart.images.copy): resolution inside a container's
view, the PathStat header, GET's tar and PUT's extraction, hostile archives included."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import stat
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncstart import errors
from asyncstart.images.copy import (
    MODE_CHAR_DEVICE,
    MODE_DEVICE,
    MODE_DIR,
    MODE_NAMED_PIPE,
    MODE_SETUID,
    MODE_STICKY,
    MODE_SYMLINK,
    ContainerView,
    archive_path,
    extract_to,
    go_file_mode,
    prepare_archive,
    stat_header,
    stat_path,
)
from asyncstart.images.source import ImportLimits

# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    for d in ("etc", "tmp", "bin", "data"):
        (root / d).mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1001:1002::/:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\n")
    (root / "etc" / "hostname").write_text("box\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("host secret\n")
    return root


def view_of(root: Path, *mounts: tuple[str, str, bool], **kw: object) -> ContainerView:
    return ContainerView(root, list(mounts), name="ctr", **kw)  # type: ignore[arg-type]


def make_tar(*members: tuple[tarfile.TarInfo, bytes | None], gz: bool = False) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buf.getvalue()
    return io.BytesIO(gzip.compress(raw) if gz else raw)


def entry(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 1_600_000_000
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def f(name: str, data: bytes = b"data", **fields: object) -> tuple[tarfile.TarInfo, bytes | None]:
    return entry(name, **fields), data


def d(name: str, **fields: object) -> tuple[tarfile.TarInfo, bytes | None]:
    return entry(name, tarfile.DIRTYPE, **fields), None


def sym(name: str, target: str) -> tuple[tarfile.TarInfo, bytes | None]:
    return entry(name, tarfile.SYMTYPE, linkname=target), None


def hard(name: str, target: str) -> tuple[tarfile.TarInfo, bytes | None]:
    return entry(name, tarfile.LNKTYPE, linkname=target), None


def extract(
    view: ContainerView,
    path: str,
    stream: io.BytesIO,
    *,
    no_overwrite: bool = False,
    copy_uid_gid: bool = False,
    limits: ImportLimits | None = None,
) -> None:
    extract_to(
        view,
        path,
        stream,
        no_overwrite_dir_non_dir=no_overwrite,
        copy_uid_gid=copy_uid_gid,
        limits=limits,
    )


def archive(view: ContainerView, path: str) -> tuple[dict[str, object], list[tarfile.TarInfo]]:
    out = io.BytesIO()
    stat_ = archive_path(view, path, out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        return stat_, tar.getmembers()


def tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


# --- resolution ------------------------------------------------------------------------------


def test_relative_and_absolute_links_resolve_inside_the_view(rootfs: Path, tmp_path: Path) -> None:
    (rootfs / "bin" / "rel").symlink_to("../etc")
    (rootfs / "evil").symlink_to("/../../../etc")
    (rootfs / "hostabs").symlink_to(tmp_path / "outside")
    view = view_of(rootfs)
    got = view.resolve("/bin/rel/passwd")
    assert (got.container_path, got.host_path) == ("/etc/passwd", rootfs / "etc" / "passwd")
    assert view.resolve("evil/hostname").host_path == rootfs / "etc" / "hostname"
    assert view.resolve("/../../..//etc/./passwd").container_path == "/etc/passwd"
    assert view.resolve("/etc/../../../tmp").host_path == rootfs / "tmp"
    with pytest.raises(errors.NotFound, match="^Could not find the file /hostabs/secret in"):
        view.resolve("/hostabs/secret")  # the host path means the container's, which lacks it
    assert view.resolve("/evil", follow_last=False).container_path == "/evil"


def test_loops_and_the_255_link_limit(rootfs: Path) -> None:
    (rootfs / "a").symlink_to("b")
    (rootfs / "b").symlink_to("/a")
    view = view_of(rootfs)
    with pytest.raises(errors.SystemError, match="too many levels of symbolic links"):
        view.resolve("/a")
    assert view.resolve("/a", follow_last=False).container_path == "/a"
    for i in range(300):
        (rootfs / f"l{i}").symlink_to(f"l{i + 1}" if i < 299 else "etc")
    assert view.resolve("/l45").container_path == "/etc"  # 255 links
    with pytest.raises(errors.SystemError, match="too many levels"):
        view.resolve("/l44")  # 256


def test_trailing_separator_asserts_a_directory(rootfs: Path) -> None:
    (rootfs / "lnk").symlink_to("etc")
    (rootfs / "flnk").symlink_to("etc/hostname")
    view = view_of(rootfs)
    assert view.resolve("/lnk/", follow_last=False).container_path == "/etc"
    assert view.resolve("/lnk/.", follow_last=False).container_path == "/etc"
    for path in ("/etc/hostname/", "/etc/hostname/.", "/flnk/", "/etc/hostname/x"):
        with pytest.raises(errors.SystemError, match="not a directory"):
            view.resolve(path)
    with pytest.raises(errors.NotFound, match="^Could not find the file /nope in container ctr$"):
        view.resolve("/nope")


def test_mounts_are_crossed_longest_prefix_first(rootfs: Path, tmp_path: Path) -> None:
    vol, inner, file_src = tmp_path / "vol", tmp_path / "inner", tmp_path / "resolv.conf"
    vol.mkdir()
    inner.mkdir()
    file_src.write_text("nameserver 1.1.1.1\n")
    (vol / "x").write_text("x")
    (inner / "y").write_text("y")
    (vol / "toetc").symlink_to("/etc")
    (rootfs / "var").mkdir()
    (rootfs / "var" / "run").symlink_to("/run")
    (rootfs / "run").mkdir()
    mounts = [
        ("/data/inner", str(inner), True),
        ("/data", str(vol), False),
        ("/etc/resolv.conf", str(file_src), True),
        ("/var/run/sock.d", str(inner), False),
    ]
    view = view_of(rootfs, *mounts)
    got = view.resolve("/data/x")
    assert (got.host_path, got.read_only) == (vol / "x", False)
    got = view.resolve("/data/inner/y")
    assert (got.host_path, got.read_only, got.container_path) == (
        inner / "y",
        True,
        "/data/inner/y",
    )
    assert view.resolve("/data/inner/../x").host_path == vol / "x"
    assert view.resolve("/data/toetc/passwd").host_path == rootfs / "etc" / "passwd"
    assert view.resolve("/etc/resolv.conf").host_path == file_src
    # dockerd mounts at the destination with the root's links followed: /var/run -> /run
    assert view.resolve("/run/sock.d/y").host_path == inner / "y"
    assert view.resolve("/var/run/sock.d/y").host_path == inner / "y"
    assert not view.resolve("/etc/passwd").read_only
    assert view_of(rootfs, readonly_rootfs=True).resolve("/etc").read_only


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    nodes=st.lists(
        st.tuples(
            st.sampled_from(["rootfs", "vol", "ro"]),
            st.lists(st.sampled_from(["a", "b", "c"]), min_size=0, max_size=2),
            st.sampled_from(["a", "b", "c", "m"]),
            st.one_of(
                st.none(),
                st.lists(st.sampled_from(["a", "b", "..", ".", "", "m", "OUT"]), max_size=6),
            ),
            st.booleans(),
        ),
        max_size=25,
    ),
    queries=st.lists(
        st.tuples(
            st.lists(st.sampled_from(["a", "b", "c", "..", ".", "m", "x"]), max_size=7),
            st.booleans(),
        ),
        min_size=1,
        max_size=15,
    ),
)
def test_resolution_never_leaves_the_view(
    nodes: list[tuple[str, list[str], str, list[str] | None, bool]],
    queries: list[tuple[list[str], bool]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        roots = {name: base / name for name in ("rootfs", "vol", "ro", "outside")}
        for path in roots.values():
            path.mkdir()
        for where, parents, name, target, absolute in nodes:
            parent = roots[where]
            for comp in parents:  # through real directories only: the tree is the host's
                if parent.is_symlink() or not parent.is_dir():
                    break
                parent = parent / comp
                if not os.path.lexists(parent):
                    parent.mkdir()
            node = parent / name
            if os.path.lexists(node) or parent.is_symlink() or not parent.is_dir():
                continue
            if target is None:
                node.mkdir()
                continue
            text = "/".join(str(roots["outside"]) if p == "OUT" else p for p in target)
            node.symlink_to(("/" if absolute else "") + (text or "."))
        view = view_of(
            roots["rootfs"], ("/m", str(roots["vol"]), False), ("/a/m", str(roots["ro"]), True)
        )
        allowed = [os.path.realpath(roots[n]) for n in ("rootfs", "vol", "ro")]
        for comps, follow in queries:
            try:
                got = view.resolve("/".join(comps), follow_last=follow)
            except (errors.NotFound, errors.SystemError):
                continue
            host = str(got.host_path)
            if host not in allowed:  # where it really is: its parent's real path, its name
                host = os.path.join(os.path.realpath(got.host_path.parent), got.host_path.name)
                assert not got.host_path.is_symlink() or not follow
            assert any(host == root or host.startswith(root + "/") for root in allowed), got


# --- stat ------------------------------------------------------------------------------------


def test_go_file_mode_bits() -> None:
    assert MODE_DIR == 0x80000000 and MODE_SYMLINK == 0x8000000
    assert go_file_mode(stat.S_IFDIR | 0o755) == 2147484141  # what dockerd sends for a directory
    assert go_file_mode(stat.S_IFLNK | 0o777) == 134218239
    assert go_file_mode(stat.S_IFREG | 0o4755) == MODE_SETUID | 0o755
    assert go_file_mode(stat.S_IFDIR | 0o1777) == MODE_DIR | MODE_STICKY | 0o777
    assert go_file_mode(stat.S_IFCHR | 0o666) == MODE_DEVICE | MODE_CHAR_DEVICE | 0o666
    assert go_file_mode(stat.S_IFBLK | 0o660) == MODE_DEVICE | 0o660
    assert go_file_mode(stat.S_IFIFO | 0o600) == MODE_NAMED_PIPE | 0o600
    assert go_file_mode(stat.S_IFSOCK | 0o755) == (1 << 24) | 0o755
    assert go_file_mode(stat.S_IFDIR | 0o2755) == MODE_DIR | (1 << 22) | 0o755


@pytest.fixture
def utc_plus_2(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC-2")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_stat_header_round_trip(rootfs: Path, utc_plus_2: None) -> None:
    host = rootfs / "etc" / "hostname"
    os.utime(host, ns=(0, 1_500_000_000_123_400_000))
    os.chmod(host, 0o640)
    got = stat_path(view_of(rootfs), "/etc/hostname")
    assert got == {
        "name": "hostname",
        "size": 4,
        "mode": 0o640,
        "mtime": "2017-07-14T04:40:00.1234+02:00",
        "linkTarget": "",
    }
    decoded = base64.b64decode(stat_header(got))
    assert decoded == (
        b'{"name":"hostname","size":4,"mode":416,'
        b'"mtime":"2017-07-14T04:40:00.1234+02:00","linkTarget":""}'
    )
    assert json.loads(decoded) == got
    weird = {"name": "a<b>&c\u2028é", "size": 0, "mode": 0, "mtime": "x", "linkTarget": ""}
    raw = base64.b64decode(stat_header(weird)).decode()
    assert '"a\\u003cb\\u003e\\u0026c\\u2028é"' in raw and json.loads(raw) == weird


def test_stat_utc_and_whole_seconds(rootfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        os.utime(rootfs / "etc", ns=(0, 1_500_000_000_000_000_000))
        assert stat_path(view_of(rootfs), "/etc")["mtime"] == "2017-07-14T02:40:00Z"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_stat_of_links_and_names(rootfs: Path) -> None:
    (rootfs / "bin" / "pw").symlink_to("../etc/passwd")
    (rootfs / "bin" / "broken").symlink_to("/missing/x")
    (rootfs / "bin" / "loop").symlink_to("loop")
    view = view_of(rootfs)
    got = stat_path(view, "/bin/pw")
    assert (got["mode"], got["linkTarget"], got["size"]) == (134218239, "/etc/passwd", 13)
    assert stat_path(view, "bin/broken")["linkTarget"] == "/missing/x"
    with pytest.raises(errors.SystemError, match="^evalSymlinksInScope: too many links"):
        stat_path(view, "/bin/loop")
    assert stat_path(view, "/etc/")["name"] == "etc"
    assert stat_path(view, "/")["name"] == "/"
    assert stat_path(view, "/")["mode"] & MODE_DIR
    with pytest.raises(errors.SystemError, match="^lstat /etc/hostname/: not a directory$"):
        stat_path(view, "/etc/hostname/")
    with pytest.raises(
        errors.NotFound, match="^Could not find the file /etc/nope in container ctr$"
    ):
        stat_path(view, "/etc/nope")


# --- archive ---------------------------------------------------------------------------------


def test_archive_of_a_file_a_directory_and_dot(rootfs: Path) -> None:
    os.chown(rootfs / "etc" / "hostname", 1234, 5678)
    view = view_of(rootfs)
    got, members = archive(view, "/etc/hostname")
    assert got["name"] == "hostname"
    assert [(m.name, m.uid, m.gid, m.uname) for m in members] == [("hostname", 1234, 5678, "")]
    _, members = archive(view, "/etc")
    assert [m.name for m in members] == ["etc", "etc/group", "etc/hostname", "etc/passwd"]
    assert members[0].isdir()
    got, members = archive(view, "etc/.")
    assert got["name"] == "."
    assert [m.name for m in members] == [".", "./group", "./hostname", "./passwd"]


def test_archive_keeps_links_as_links(rootfs: Path, tmp_path: Path) -> None:
    (rootfs / "etc" / "out").symlink_to(tmp_path / "outside")
    (rootfs / "etc" / "up").symlink_to("../../../../outside")
    (rootfs / "link").symlink_to("etc")
    os.link(rootfs / "etc" / "hostname", rootfs / "etc" / "zz-hard")
    os.mkfifo(rootfs / "etc" / "fifo")
    view = view_of(rootfs)
    got, members = archive(view, "/link")
    assert got["mode"] & MODE_SYMLINK and got["linkTarget"] == "/etc"
    assert [(m.name, m.issym(), m.linkname) for m in members] == [("link", True, "etc")]
    _, members = archive(view, "/etc")
    by_name = {m.name: m for m in members}
    assert by_name["etc/out"].issym() and by_name["etc/out"].linkname == str(tmp_path / "outside")
    assert by_name["etc/up"].issym()
    assert not any("secret" in name for name in by_name)
    assert by_name["etc/zz-hard"].islnk() and by_name["etc/zz-hard"].linkname == "etc/hostname"
    assert by_name["etc/fifo"].isfifo()
    got, members = archive(view, "/link/")  # a trailing "/" follows the link
    assert got["mode"] & MODE_DIR and got["name"] == "link"
    assert "link/passwd" in [m.name for m in members]


def test_archive_includes_mounts_and_names_the_root(rootfs: Path, tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "v.txt").write_text("volume")
    view = view_of(rootfs, ("/data", str(vol), False), ("/mnt/new", str(vol), True))
    _, members = archive(view, "/data")
    assert [m.name for m in members] == ["data", "data/v.txt"]
    _, members = archive(view, "/")
    names = [m.name for m in members]
    assert names[0] == "" and "/data/v.txt" in names and "/etc/passwd" in names
    assert not any(n.startswith("/mnt") for n in names)  # no /mnt in the root: not walked


def test_prepare_archive_reports_missing_first(rootfs: Path) -> None:
    view = view_of(rootfs)
    with pytest.raises(errors.NotFound, match="^Could not find the file nope in container ctr$"):
        prepare_archive(view, "nope")
    with pytest.raises(errors.SystemError, match="^lstat /etc/passwd/: not a directory$"):
        prepare_archive(view, "/etc/passwd/")
    prepared = prepare_archive(view, "/etc/passwd")
    out = io.BytesIO()
    prepared.write(out)
    assert prepared.stat["name"] == "passwd" and len(out.getvalue()) % 10240 == 0


# --- extraction ------------------------------------------------------------------------------


def test_extract_normal(rootfs: Path) -> None:
    view = view_of(rootfs)
    stream = make_tar(d("d", mode=0o750, uid=7, gid=8), f("d/f", b"hello", mode=0o4640, uid=1000))
    extract(view, "/tmp", stream)
    target = rootfs / "tmp" / "d" / "f"
    assert target.read_bytes() == b"hello"
    st_ = target.stat()
    assert (st_.st_uid, stat.S_IMODE(st_.st_mode), int(st_.st_mtime)) == (
        1000,
        0o4640,
        1_600_000_000,
    )
    dst = (rootfs / "tmp" / "d").stat()
    assert (dst.st_uid, dst.st_gid, stat.S_IMODE(dst.st_mode)) == (7, 8, 0o750)
    assert int(dst.st_mtime) == 1_600_000_000
    # implied parents: 0755, root's; absolute names are relative to the destination
    extract(
        view, "/tmp", make_tar(f("/deep/er/x"), hard("/deep/h", "/deep/er/x"), sym("s", "/etc"))
    )
    assert stat.S_IMODE((rootfs / "tmp" / "deep").stat().st_mode) == 0o755
    assert (rootfs / "tmp" / "deep" / "h").stat().st_ino == (
        rootfs / "tmp" / "deep/er/x"
    ).stat().st_ino
    assert os.readlink(rootfs / "tmp" / "s") == "/etc"
    extract(view, "/tmp", io.BytesIO(b""))  # an empty body is an empty archive
    extract(view, "/tmp", make_tar(f("gz.txt", b"zipped"), gz=True))
    assert (rootfs / "tmp" / "gz.txt").read_bytes() == b"zipped"
    fifo = entry("pipe", tarfile.FIFOTYPE)
    extract(view, "/tmp", make_tar((fifo, None)))
    assert stat.S_ISFIFO((rootfs / "tmp" / "pipe").lstat().st_mode)


def test_extract_destination_checks(rootfs: Path, tmp_path: Path) -> None:
    (rootfs / "lnk").symlink_to("/tmp")
    vol = tmp_path / "vol"
    vol.mkdir()
    view = view_of(rootfs, ("/ro", str(vol), True))
    extract(view, "/lnk", make_tar(f("via-link")))
    assert (rootfs / "tmp" / "via-link").exists() and not (rootfs / "via-link").exists()
    with pytest.raises(errors.InvalidParameter, match="^extraction point is not a directory$"):
        extract(view, "/etc/passwd", make_tar(f("x")))
    with pytest.raises(errors.NotFound, match="^Could not find the file /nope/x in container ctr$"):
        extract(view, "/nope/x", make_tar(f("x")))
    with pytest.raises(errors.InvalidParameter, match="^mounted volume is marked read-only$"):
        extract(view, "/ro", make_tar(f("x")))
    ro_root = view_of(rootfs, ("/data", str(vol), False), readonly_rootfs=True)
    with pytest.raises(errors.InvalidParameter, match="^container rootfs is marked read-only$"):
        extract(ro_root, "/tmp", make_tar(f("x")))
    extract(ro_root, "/data", make_tar(f("x")))
    assert (vol / "x").exists()


def test_no_overwrite_dir_non_dir(rootfs: Path) -> None:
    (rootfs / "tmp" / "dir").mkdir()
    (rootfs / "tmp" / "file").write_text("old")
    view = view_of(rootfs)
    with pytest.raises(
        errors.SystemError, match='^cannot overwrite directory "dir" with non-directory "/tmp"$'
    ):
        extract(view, "/tmp/.", make_tar(f("dir")), no_overwrite=True)
    with pytest.raises(
        errors.SystemError, match='^cannot overwrite non-directory "file" with directory "/tmp"$'
    ):
        extract(view, "/tmp", make_tar(d("file")), no_overwrite=True)
    extract(view, "/tmp", make_tar(d("dir"), f("file", b"new")), no_overwrite=True)
    assert (rootfs / "tmp" / "file").read_bytes() == b"new"
    extract(view, "/tmp", make_tar(f("dir"), d("file")))  # without the flag: replaced
    assert (rootfs / "tmp" / "dir").is_file() and (rootfs / "tmp" / "file").is_dir()


def test_hostile_names_and_links(rootfs: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    before = tree(tmp_path / "outside")
    view = view_of(rootfs)
    with pytest.raises(errors.InvalidParameter, match="invalid entry name"):
        extract(view, "/tmp", make_tar(f("../../../outside/pwned")))
    with pytest.raises(errors.InvalidParameter, match="invalid entry name"):
        extract(view, "/", make_tar(f("a/../../pwned")))
    # a link the archive makes, then a write through it: resolved in the destination's root
    extract(view, "/", make_tar(sym("link", "/"), f("link/etc/hostname", b"mine")))
    assert (rootfs / "etc" / "hostname").read_bytes() == b"mine"
    extract(view, "/tmp", make_tar(sym("link", "/"), f("link/etc/motd", b"mine")))
    assert (rootfs / "tmp" / "etc" / "motd").read_bytes() == b"mine"
    extract(view, "/tmp", make_tar(sym("host", str(outside)), f("host/pwned")))
    assert (rootfs / "tmp" / str(outside).lstrip("/") / "pwned").exists()
    # links already in the container
    (rootfs / "tmp" / "evil").symlink_to("/../../../" + str(outside).lstrip("/"))
    extract(view, "/tmp", make_tar(f("evil/pwned2")))
    (rootfs / "tmp" / "up").symlink_to("../../../../../../outside")
    with pytest.raises(errors.InvalidParameter, match="a link in its path leaves /tmp"):
        extract(view, "/tmp", make_tar(f("up/pwned3")))
    (rootfs / "tmp" / "inside").symlink_to("../etc")
    with pytest.raises(errors.InvalidParameter, match="leaves"):
        extract(view, "/tmp", make_tar(f("inside/pwned4")))  # go-archive: the root is /tmp
    # a symlink in the way of a file is replaced, never written through
    (rootfs / "tmp" / "victim").symlink_to(outside / "secret")
    extract(view, "/tmp", make_tar(f("victim", b"replaced")))
    assert (rootfs / "tmp" / "victim").read_bytes() == b"replaced"
    assert not (rootfs / "tmp" / "victim").is_symlink()
    assert tree(outside) == before
    assert (outside / "secret").read_text() == "host secret\n"


def test_hostile_hard_links_and_devices(rootfs: Path, tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "secret"
    view = view_of(rootfs)
    with pytest.raises(errors.InvalidParameter, match='invalid hardlink target "../../x"'):
        extract(view, "/tmp", make_tar(hard("h", "../../x")))
    with pytest.raises(errors.InvalidParameter, match="invalid hardlink target"):
        extract(view, "/tmp", make_tar(hard("h", "/../etc/passwd")))
    with pytest.raises(errors.NotFound):  # dockerd: ENOENT is "Could not find the file"
        extract(view, "/tmp", make_tar(hard("h", str(secret))))
    with pytest.raises(errors.NotFound):
        extract(view, "/tmp", make_tar(sym("l", str(secret.parent)), hard("h", "l/secret")))
    assert secret.stat().st_nlink == 1
    (rootfs / "tmp" / "lnk").symlink_to(secret)
    extract(view, "/tmp", make_tar(hard("h2", "lnk")))  # a hard link to the link itself
    assert (rootfs / "tmp" / "h2").is_symlink() and secret.stat().st_nlink == 1
    dev = entry("null", tarfile.CHRTYPE, devmajor=1, devminor=3)
    with pytest.raises(errors.InvalidParameter, match="it is a device node"):
        extract(view, "/tmp", make_tar((dev, None)))
    assert not (rootfs / "tmp" / "null").exists()


def test_bad_archives_and_limits(rootfs: Path) -> None:
    view = view_of(rootfs)
    with pytest.raises(errors.InvalidParameter, match="^invalid tar archive"):
        extract(view, "/tmp", io.BytesIO(b"not a tar" * 100))
    truncated = make_tar(f("big", b"x" * 5000)).getvalue()[:1024]
    with pytest.raises(errors.InvalidParameter, match="^invalid tar archive"):
        extract(view, "/tmp", io.BytesIO(truncated))
    with pytest.raises(errors.InvalidParameter, match="^archive too large: more than 2 entries"):
        extract(view, "/tmp", make_tar(f("1"), f("2"), f("3")), limits=ImportLimits(max_entries=2))
    with pytest.raises(errors.InvalidParameter, match="^archive too large"):
        extract(view, "/tmp", make_tar(f("big2", b"x" * 100)), limits=ImportLimits(max_bytes=10))
    assert not (rootfs / "tmp" / "big2").exists()


def test_extract_into_mounts(rootfs: Path, tmp_path: Path) -> None:
    vol, ro = tmp_path / "vol", tmp_path / "ro"
    vol.mkdir()
    ro.mkdir()
    (rootfs / "data" / "shadowed").write_text("rootfs copy")
    view = view_of(rootfs, ("/data", str(vol), False), ("/data/ro", str(ro), True))
    extract(view, "/data", make_tar(f("a.txt", b"A")))
    extract(view, "/", make_tar(d("data", mode=0o700), f("data/b.txt", b"B")))
    assert (vol / "a.txt").read_bytes() == b"A" and (vol / "b.txt").read_bytes() == b"B"
    assert stat.S_IMODE(vol.stat().st_mode) == 0o700  # a directory entry merges into the mount
    assert not (rootfs / "data" / "a.txt").exists()
    with pytest.raises(errors.SystemError, match="read-only file system"):
        extract(view, "/data", make_tar(f("ro/x")))
    with pytest.raises(errors.SystemError, match="device or resource busy"):
        extract(view, "/", make_tar(f("data", b"not a dir")))
    assert (vol / "a.txt").exists()
    with pytest.raises(errors.SystemError, match="invalid cross-device link"):
        extract(view, "/", make_tar(hard("tmp/h", "data/a.txt")))
    assert not list(ro.iterdir())


def test_owners(rootfs: Path) -> None:
    view = view_of(rootfs, user="app")
    extract(view, "/tmp", make_tar(f("a", uid=5, gid=6)), copy_uid_gid=True)
    st_ = (rootfs / "tmp" / "a").stat()
    assert (st_.st_uid, st_.st_gid) == (1001, 1002)
    extract(view, "/tmp", make_tar(f("b", uid=5, gid=6)))
    st_ = (rootfs / "tmp" / "b").stat()
    assert (st_.st_uid, st_.st_gid) == (5, 6)
    grouped = view_of(rootfs, user="4242:staff")
    extract(grouped, "/tmp", make_tar(f("c", uid=5, gid=6)), copy_uid_gid=True)
    st_ = (rootfs / "tmp" / "c").stat()
    assert (st_.st_uid, st_.st_gid) == (4242, 50)
    with pytest.raises(errors.InvalidParameter, match="nobody"):
        extract(view_of(rootfs, user="nobody"), "/tmp", make_tar(f("d")), copy_uid_gid=True)
    remapped = view_of(rootfs, id_map=(100000, 100000, 65536))
    extract(remapped, "/tmp", make_tar(f("new/e", uid=5, gid=6)))
    assert (rootfs / "tmp" / "new" / "e").stat().st_uid == 100005
    assert (rootfs / "tmp" / "new").stat().st_uid == 100000  # implied: the remapped root
    with pytest.raises(errors.SystemError, match="container ID 70000 cannot be mapped"):
        extract(remapped, "/tmp", make_tar(f("g", uid=70000)))
    _, members = archive(remapped, "/tmp/new")
    assert [(m.name, m.uid) for m in members] == [("new", 100000), ("new/e", 100005)]


def test_archive_then_extract_round_trip(rootfs: Path, tmp_path: Path) -> None:
    (rootfs / "etc" / "sub").mkdir()
    (rootfs / "etc" / "sub" / "rel").symlink_to("../passwd")
    os.link(rootfs / "etc" / "passwd", rootfs / "etc" / "sub" / "hard")
    out = io.BytesIO()
    archive_path(view_of(rootfs), "/etc", out)
    other = tmp_path / "other"
    other.mkdir()
    out.seek(0)
    extract(view_of(other), "/", out)
    assert tree(other / "etc") == tree(rootfs / "etc")
    assert (other / "etc" / "sub" / "hard").stat().st_ino == (
        other / "etc" / "passwd"
    ).stat().st_ino
    assert os.readlink(other / "etc" / "sub" / "rel") == "../passwd"
    assert (other / "etc" / "passwd").read_text() == (rootfs / "etc" / "passwd").read_text()


def test_links_to_the_root_and_to_dot(rootfs: Path) -> None:
    (rootfs / "etc" / "up").symlink_to("/")
    (rootfs / "etc" / "dot").symlink_to(".")
    view = view_of(rootfs)
    assert stat_path(view, "/etc/up/")["mode"] & MODE_DIR
    got, members = archive(view, "/etc/up/")
    names = [m.name for m in members]
    assert got["name"] == "up" and "up/etc/passwd" in names and "up/etc/up" in names
    _, members = archive(view, "/etc/dot/")
    assert "dot/passwd" in [m.name for m in members]
    extract(view, "/etc/up", make_tar(f("via-up")))
    assert (rootfs / "via-up").exists()


def test_archive_stops_when_the_reader_goes(rootfs: Path) -> None:
    for i in range(50):
        (rootfs / "tmp" / f"f{i}").write_bytes(os.urandom(4096))
    read, write = os.pipe()
    os.close(read)
    with open(write, "wb", buffering=0) as out:
        got = archive_path(view_of(rootfs), "/tmp", out)  # EPIPE: ends quietly, once
    assert got["name"] == "tmp"
