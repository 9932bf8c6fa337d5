"""Mount points: Binds, Mounts, image volumes and VolumesFrom, parsed and checked as dockerd."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncstart import errors
from asyncstart.config import Mount, parse_host_config
from asyncstart.mounts import (
    MountPoint,
    inherit_mounts,
    inspect_entry,
    merge_tmpfs_options,
    oci_mount,
    parse_bind,
    parse_mounts,
    parse_volumes_from,
    rootfs_propagation,
    validate_tmpfs_destination,
)


def namer() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{next(counter):064x}"


def bind(raw: str, **kwargs: Any) -> MountPoint:
    return parse_bind(raw, namer(), **kwargs)


def mounts(*specs: dict[str, Any]) -> list[Mount]:
    parsed = parse_host_config({"Mounts": list(specs)}).mounts
    assert parsed is not None
    return parsed


def parse(
    binds: list[str] | None = None,
    specs: list[dict[str, Any]] | None = None,
    image: list[str] | None = None,
    **kwargs: Any,
) -> list[MountPoint]:
    return parse_mounts(binds, mounts(*(specs or [])), image, namer(), **kwargs)


def refused(message: str, call: Callable[[], object]) -> None:
    with pytest.raises(errors.InvalidParameter) as caught:
        call()
    assert str(caught.value) == message
    assert caught.value.status == 400


# -- Binds ----------------------------------------------------------------------------------


def test_a_bind_with_an_absolute_source() -> None:
    point = bind("/srv/data/../data/:/data/")
    assert point == MountPoint(
        type="bind", destination="/data", source="/srv/data", rw=True, propagation="rprivate",
        create_source=True,
    )  # fmt: skip
    assert inspect_entry(point) == {
        "Type": "bind", "Source": "/srv/data", "Destination": "/data", "Mode": "", "RW": True,
        "Propagation": "rprivate",
    }  # fmt: skip


def test_a_bind_keeps_its_mode_as_given() -> None:
    point = bind("/etc/app:/conf:ro,Z,rshared")
    assert (point.mode, point.rw, point.propagation) == ("ro,Z,rshared", False, "rshared")
    assert bind("/x:/y:rw,z,cached").rw


def test_a_named_volume() -> None:
    point = bind("cache:/var/cache:ro")
    assert (point.type, point.name, point.driver, point.mode) == ("volume", "cache", "local", "ro")
    assert (point.rw, point.propagation, point.copy_data, point.anonymous) == (
        False, "", True, False,
    )  # fmt: skip
    assert bind("cache:/c").mode == "z"  # dockerd's setBindModeIfNull for local volumes
    assert not bind("cache:/c:nocopy").copy_data
    assert bind("cache:/c", volume_driver="local").driver == "local"
    assert inspect_entry(bind("cache:/c")) == {
        "Type": "volume", "Name": "cache", "Source": "", "Destination": "/c", "Driver": "local",
        "Mode": "z", "RW": True, "Propagation": "",
    }  # fmt: skip


def test_a_destination_alone_is_an_anonymous_volume() -> None:
    point = bind("/data")
    assert (point.type, point.name, point.anonymous, point.mode) == (
        "volume",
        f"{1:064x}",
        True,
        "z",
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (":/x", "invalid volume specification: ':/x'"),
        ("/a:/b:ro:extra", "invalid volume specification: '/a:/b:ro:extra'"),
        ("/foo:ro", "invalid volume specification: '/foo:ro'"),
        ("/foo:", "invalid volume specification: '/foo:'"),
        ("/a:/b:bogus", "invalid mode: bogus"),
        ("/a:/b:ro,rw", "invalid mode: ro,rw"),
        ("/a:/b:ro,", "invalid mode: ro,"),
        ("/a:/", "invalid volume specification: '/a:/': invalid mount config for type "
                 "\"bind\": invalid specification: destination can't be '/'"),
        ("/a:/b/..", "invalid volume specification: '/a:/b/..': invalid mount config for type "
                     "\"bind\": invalid specification: destination can't be '/'"),
        ("/a:rel", "invalid volume specification: '/a:rel': invalid mount config for type "
                   "\"bind\": invalid mount path: 'rel' mount path must be absolute"),
        ("data:data", "invalid volume specification: 'data:data': invalid mount config for type "
                      "\"volume\": invalid mount path: 'data' mount path must be absolute"),
        ("rel", "invalid volume specification: 'rel': invalid mount config for type "
                "\"volume\": invalid mount path: 'rel' mount path must be absolute"),
        ("v::ro", "invalid volume specification: 'v::ro': invalid mount config for type "
                  "\"volume\": field Target must not be empty"),
        ("v:/x:rshared", "invalid volume specification: 'v:/x:rshared': invalid mount config for "
                         "type \"volume\": field BindOptions must not be specified"),
        ("/a:/x:nocopy", "invalid volume specification: '/a:/x:nocopy': invalid mount config for "
                         "type \"bind\": field VolumeOptions must not be specified"),
        ("../x:/x", 'create ../x: "../x" includes invalid characters for a local volume name, '
                    'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
                    "directory, use absolute path"),
        ("a:/x", "create a: volume name is too short, names should be at least two alphanumeric "
                 "characters"),
    ],
)  # fmt: skip
def test_binds_refused_with_dockerds_words(raw: str, message: str) -> None:
    refused(message, lambda: bind(raw))


@given(st.text(alphabet=st.sampled_from("/:.aZz,ro-wcp\\ \x00é"), max_size=24) | st.text())
def test_a_bind_either_parses_to_a_sane_point_or_is_a_400(raw: str) -> None:
    try:
        point = bind(raw)
    except errors.InvalidParameter:
        return
    assert point.destination.startswith("/") and point.destination != "/"
    assert point.type in ("bind", "volume")
    if point.type == "volume":
        assert "/" not in point.name and ".." not in point.name.split(".")
    else:
        assert point.source.startswith("/") and point.create_source


# -- Mounts ---------------------------------------------------------------------------------


def test_mounts_of_type_bind_with_options() -> None:
    (point,) = parse(specs=[{
        "Type": "bind", "Source": "/srv//a", "Target": "/a/", "ReadOnly": True,
        "BindOptions": {"Propagation": "rslave", "NonRecursive": True,
                        "ReadOnlyNonRecursive": True},
    }])  # fmt: skip
    assert (point.source, point.destination, point.rw, point.mode) == ("/srv/a", "/a", False, "")
    assert (point.propagation, point.non_recursive, point.create_source) == ("rslave", True, False)
    assert oci_mount(point) == {
        "destination": "/a", "type": "bind", "source": "/srv/a",
        "options": ["bind", "ro", "rslave"],
    }  # fmt: skip


def test_a_mounts_bind_source_must_exist_unless_created() -> None:
    exists = {"/here"}.__contains__
    spec = {"Type": "bind", "Source": "/gone", "Target": "/t"}
    refused(
        'invalid mount config for type "bind": bind source path does not exist: /gone',
        lambda: parse(specs=[spec], source_exists=exists),
    )
    created = {**spec, "BindOptions": {"CreateMountpoint": True}}
    assert parse(specs=[created], source_exists=exists)[0].create_source


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"Type": "bind", "Target": "/t"}, 'type "bind": field Source must not be empty'),
        ({"Type": "bind", "Source": "rel", "Target": "/t"},
         "type \"bind\": invalid mount path: 'rel' mount path must be absolute"),
        ({"Type": "bind", "Source": "/s", "Target": "/t", "BindOptions": {"Propagation": "up"}},
         'type "bind": invalid propagation mode: up'),
        ({"Type": "bind", "Source": "/s"}, 'type "bind": field Target must not be empty'),
        ({"Type": "volume", "Target": "/t", "BindOptions": {}},
         'type "volume": field BindOptions must not be specified'),
        ({"Type": "bind", "Source": "/s", "Target": "/t", "TmpfsOptions": {}},
         'type "bind": field TmpfsOptions must not be specified'),
        ({"Type": "volume", "Target": "/t", "VolumeOptions": {"Subpath": "a"}},
         'type "volume": must not set Subpath when using anonymous volumes'),
        ({"Type": "volume", "Source": "v", "Target": "/t", "VolumeOptions": {"Subpath": "../a"}},
         'type "volume": subpath must be a relative path within the volume'),
        ({"Type": "tmpfs", "Source": "x", "Target": "/t"},
         'type "tmpfs": field Source must not be specified'),
        ({"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"Options": [["uid", "0"]]}},
         'type "tmpfs": invalid option: uid'),
        ({"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"Options": [[]]}},
         'type "tmpfs": invalid option array length'),
        ({"Type": "npipe", "Source": "x", "Target": "/t"}, 'type "npipe": mount type unknown'),
        ({"Type": "image", "Target": "/t"}, 'type "image": field Source must not be empty'),
        ({"Type": "tmpfs", "Target": "/"},
         "type \"tmpfs\": invalid specification: destination can't be '/'"),
    ],
)  # fmt: skip
def test_mounts_refused_as_validate_mount_config_words_it(
    spec: dict[str, Any], message: str
) -> None:
    refused(f"invalid mount config for {message}", lambda: parse(specs=[spec]))


@pytest.mark.parametrize(
    ("spec", "setting"),
    [
        ({"Type": "image", "Source": "busybox", "Target": "/t"}, "Mounts.Type"),
        ({"Type": "volume", "Source": "v", "Target": "/t", "VolumeOptions": {"Subpath": "a"}},
         "Mounts.VolumeOptions.Subpath"),
        ({"Type": "bind", "Source": "/s", "Target": "/t", "BindOptions": {"Recursive": "x"}},
         "Mounts.BindOptions"),
        ({"Type": "bind", "Source": "/s", "Target": "/t", "Consistency": "eventual"},
         "Mounts.Consistency"),
    ],
)  # fmt: skip
def test_what_is_not_applied_is_refused_never_ignored(spec: dict[str, Any], setting: str) -> None:
    with pytest.raises(errors.InvalidParameter, match=f"does not apply HostConfig.{setting} yet"):
        parse(specs=[spec])


def test_read_only_bind_option_conflicts_are_refused_at_create() -> None:
    spec = {"Type": "bind", "Source": "/s", "Target": "/t"}
    refused(
        "mount options conflict: !ReadOnly && BindOptions.ReadOnlyNonRecursive",
        lambda: parse(specs=[{**spec, "BindOptions": {"ReadOnlyNonRecursive": True}}]),
    )
    both = {"ReadOnlyNonRecursive": True, "ReadOnlyForceRecursive": True}
    refused(
        "mount options conflict: ReadOnlyNonRecursive && BindOptions.ReadOnlyForceRecursive",
        lambda: parse(specs=[{**spec, "ReadOnly": True, "BindOptions": both}]),
    )
    (forced,) = parse(specs=[{**spec, "ReadOnly": True,
                             "BindOptions": {"ReadOnlyForceRecursive": True}}])  # fmt: skip
    assert oci_mount(forced, rro=True)["options"] == ["rbind", "rro", "rprivate"]
    with pytest.raises(errors.SystemError, match="rro is not supported"):
        oci_mount(forced)


def test_mounts_of_type_volume() -> None:
    named, anonymous = parse(specs=[
        {"Type": "volume", "Source": "db", "Target": "/db",
         "VolumeOptions": {"NoCopy": True, "Labels": {"a": "b"},
                           "DriverConfig": {"Name": "local", "Options": {"o": "x"}}}},
        {"Type": "volume", "Target": "/anon", "ReadOnly": True},
    ])  # fmt: skip
    assert (named.name, named.copy_data, named.volume_labels, named.driver_opts) == (
        "db", False, {"a": "b"}, {"o": "x"},
    )  # fmt: skip
    assert (named.mode, named.driver, named.anonymous) == ("z", "local", False)
    assert (anonymous.anonymous, anonymous.rw, anonymous.copy_data) == (True, False, True)
    # Another driver is carried to the store, which answers dockerd's 404.
    (other,) = parse(specs=[{"Type": "volume", "Source": "vv", "Target": "/v",
                             "VolumeOptions": {"DriverConfig": {"Name": "nfs"}}}])  # fmt: skip
    assert other.driver == "nfs"
    sourced = oci_mount(named, "/var/lib/asyncstart/volumes/db/_data")
    assert sourced["options"] == ["rbind", "rw"]
    with pytest.raises(ValueError, match="no source yet"):
        oci_mount(named)


def test_mounts_of_type_tmpfs() -> None:
    (point,) = parse(specs=[{
        "Type": "tmpfs", "Target": "/run", "ReadOnly": True,
        "TmpfsOptions": {"SizeBytes": 64 * 1024 * 1024, "Mode": 0o1777, "Options": [["exec"]]},
    }])  # fmt: skip
    assert point.tmpfs_options == ("ro", "mode=1777", "size=64m", "exec")
    assert oci_mount(point) == {
        "destination": "/run", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev", "rprivate", "ro", "mode=1777", "size=64m", "exec"],
    }  # fmt: skip
    (odd,) = parse(specs=[{"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1500}}])
    assert odd.tmpfs_options == ("size=1500",)
    assert inspect_entry(odd) == {"Type": "tmpfs", "Source": "", "Destination": "/t",
                                  "Mode": "", "RW": True, "Propagation": ""}  # fmt: skip
    with pytest.raises(errors.InvalidParameter, match="TmpfsOptions"):
        parse(specs=[{"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": -1}}])


def test_merge_tmpfs_options_as_moby() -> None:
    assert merge_tmpfs_options(["noexec", "size=1", "defaults", "exec", "size=2", "ro"]) == [
        "exec", "size=2", "ro",
    ]  # fmt: skip
    refused('invalid tmpfs option "bogus"', lambda: merge_tmpfs_options(["bogus"]))
    refused('invalid tmpfs option "color"', lambda: merge_tmpfs_options(["color=red"]))


# -- all of them ----------------------------------------------------------------------------


def test_duplicate_destinations_are_refused() -> None:
    refused("Duplicate mount point: /data", lambda: parse(["/a:/data", "/b:/data/"]))
    refused("Duplicate mount point: /data", lambda: parse(["/a:/data"], tmpfs=["/data"]))
    # A Mounts entry names its target as given, as dockerd does.
    refused(
        "Duplicate mount point: /data/",
        lambda: parse(["/a:/data"], [{"Type": "volume", "Target": "/data/"}]),
    )
    refused(
        "Duplicate mount point: /t",
        lambda: parse(specs=[{"Type": "tmpfs", "Target": "/t"}], tmpfs=["/t"]),
    )


def test_mounts_are_validated_before_binds_as_dockerd_does() -> None:
    refused(
        'invalid mount config for type "npipe": mount type unknown',
        lambda: parse(["bad"], [{"Type": "npipe", "Target": "/t"}]),
    )


def test_tmpfs_destinations() -> None:
    validate_tmpfs_destination("/run")
    refused("invalid specification: destination can't be '/'", lambda: parse(tmpfs=["//"]))
    refused("invalid mount path: 'run' mount path must be absolute", lambda: parse(tmpfs=["run"]))


def test_precedence_volumes_from_binds_mounts_image() -> None:
    inherited = [
        MountPoint(type="volume", destination="/shared", name="s" * 64, driver="local"),
        MountPoint(type="volume", destination="/data", name="old", driver="local"),
        MountPoint(type="volume", destination="/scratch", name="t" * 64, driver="local"),
    ]
    points = parse(
        ["/host:/data"],
        [{"Type": "volume", "Source": "logs", "Target": "/var/log"}],
        ["/data", "/var/log", "/cache/", "/shared", "/scratch"],
        inherited=inherited,
        tmpfs=["/scratch"],
    )
    by_destination = {p.destination: p for p in points}
    assert by_destination["/data"].source == "/host"  # the bind wins over volumes-from
    assert by_destination["/var/log"].name == "logs"  # the mount wins over the image
    assert by_destination["/shared"].name == "s" * 64  # volumes-from wins over the image
    assert "/scratch" not in by_destination  # HostConfig.Tmpfs wins over both
    cache = by_destination["/cache"]
    assert (cache.anonymous, cache.copy_data, cache.mode, cache.rw) == (True, True, "", True)
    # Sorted for mounting: fewer components first.
    assert [p.destination.count("/") for p in points] == sorted(
        p.destination.count("/") for p in points
    )


def test_image_volumes_must_be_absolute_and_not_root() -> None:
    refused("invalid mount path: 'data' mount path must be absolute", lambda: parse(image=["data"]))
    refused("invalid specification: destination can't be '/'", lambda: parse(image=["/"]))


def test_binds_of_the_daemon_root_get_rslave() -> None:
    (point,) = parse(["/var/lib/asyncstart/x:/x"], daemon_root="/var/lib/asyncstart")
    assert point.propagation == "rslave"
    (holder,) = parse(["/var:/v:rshared"], daemon_root="/var/lib/asyncstart")
    assert holder.propagation == "rshared"
    assert parse(["/srv:/s"], daemon_root="/var/lib/asyncstart")[0].propagation == "rprivate"
    refused(
        'invalid mount config: must use either propagation mode "rslave" or "rshared" when '
        'mount source is within the daemon root, daemon root: "/var/lib/asyncstart", bind '
        'mount source: "/var", propagation: "private"',
        lambda: parse(["/var:/v:private"], daemon_root="/var/lib/asyncstart"),
    )


def test_rootfs_propagation_follows_the_points() -> None:
    assert rootfs_propagation(parse(["/a:/a:rshared", "/b:/b"])) == "shared"
    assert rootfs_propagation(parse(["/a:/a:slave", "/b:/b"])) == "rslave"
    assert rootfs_propagation(parse(["/a:/a", "vv:/v"])) is None


# -- VolumesFrom ----------------------------------------------------------------------------


def test_parse_volumes_from() -> None:
    assert parse_volumes_from("web") == ("web", "rw")
    assert parse_volumes_from("web:ro,z") == ("web", "ro,z")
    refused("volumes-from specification cannot be an empty string", lambda: parse_volumes_from(""))
    for mode in ("rshared", "nocopy", "bogus", "ro,rw"):
        with pytest.raises(errors.InvalidParameter, match=f"^invalid mode: {mode}$"):
            parse_volumes_from(f"web:{mode}")


def test_inherited_points_take_the_stricter_mode_and_are_not_copied_up() -> None:
    source = [
        bind("data:/data:rw,z"),
        bind("/host:/host:ro"),
        MountPoint(type="tmpfs", destination="/t", tmpfs_options=("size=1k",)),
    ]
    read_only = inherit_mounts(source, "ro")
    assert [p.rw for p in read_only] == [False, False, False]
    assert all(p.mode == "" and not p.copy_data for p in read_only)
    assert [p.rw for p in inherit_mounts(source, "rw")] == [True, False, True]
    assert read_only[1].propagation == "rprivate" and read_only[2].tmpfs_options == ("size=1k",)


_ANY = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3)
    ),
    max_leaves=8,
)
_OPTION_KEYS = st.sampled_from(
    ["Propagation", "NonRecursive", "CreateMountpoint", "NoCopy", "Labels", "Subpath",
     "DriverConfig", "SizeBytes", "Mode", "Options", "Other"]
)  # fmt: skip


@given(
    st.sampled_from(["bind", "volume", "tmpfs", "image", "npipe", ""]),
    st.text(alphabet=st.sampled_from("/ab.\\:"), max_size=8),
    st.text(alphabet=st.sampled_from("/ab.\\"), max_size=8),
    st.sampled_from(["BindOptions", "VolumeOptions", "TmpfsOptions"]),
    st.dictionaries(_OPTION_KEYS, _ANY, max_size=3) | st.none(),
)
def test_any_mount_is_a_sane_point_or_a_400(
    kind: str, source: str, target: str, section: str, options: dict[str, Any] | None
) -> None:
    spec = {"Type": kind, "Source": source, "Target": target, section: options}
    try:
        points = parse(specs=[spec])
    except errors.InvalidParameter:
        return
    (point,) = points
    assert point.destination.startswith("/") and point.destination != "/"
    assert point.type == kind
    oci_mount(point, "/somewhere")
