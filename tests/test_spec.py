"""The OCI ``config.json`` builder, on its own: no root, no runc, no files.

Config and HostConfig come from Docker's JSON shapes (``parse_config``/``parse_host_config``),
as the daemon decodes a ``docker create`` body, so a renamed wire field shows up here too.
"""

from __future__ import annotations

from typing import Any

import pytest

from asyncstart import errors
from asyncstart.config import CAPABILITIES, parse_config, parse_host_config
from asyncstart.spec import DEFAULT_CAPABILITIES, DEFAULT_PATH, build_spec, process_args

CID = "3f1c" + "ab" * 30
ROOTFS = "/var/lib/asyncstart/overlay/x/merged"

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
# a comment line, and a broken one:
broken
web:x:1000:1001:web server:/home/web:/bin/sh
short:x:1002
"""
GROUP = """\
root:x:0:
staff:x:50:web
www-data:x:33:
"""


def spec(
    config: dict[str, Any] | None = None, host: dict[str, Any] | None = None, **kwargs: Any
) -> dict[str, Any]:
    kwargs.setdefault("rootfs", ROOTFS)
    kwargs.setdefault("netns", "")
    return build_spec(
        CID,
        parse_config({"Image": "busybox", "Cmd": ["sleep", "1"], **(config or {})}),
        parse_host_config(host or {}),
        **kwargs,
    )


def mounts_at(document: dict[str, Any], destination: str) -> list[dict[str, Any]]:
    return [m for m in document["mounts"] if m["destination"] == destination]


def only_mount(document: dict[str, Any], destination: str) -> dict[str, Any]:
    found = mounts_at(document, destination)
    assert len(found) == 1, found
    return found[0]


# -- process ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entrypoint", "cmd", "args"),
    [
        (None, ["sleep", "1"], ["sleep", "1"]),
        (["/init", "--"], ["serve", "-v"], ["/init", "--", "serve", "-v"]),
        (["/init"], None, ["/init"]),
        ([], [], []),
        (None, None, []),
    ],
)
def test_process_args_are_entrypoint_then_cmd(
    entrypoint: list[str] | None, cmd: list[str] | None, args: list[str]
) -> None:
    config = parse_config({"Entrypoint": entrypoint, "Cmd": cmd})
    assert process_args(config) == args
    assert (
        build_spec(CID, config, parse_host_config({}), rootfs="/r", netns="")["process"]["args"]
        == args
    )


def test_defaults_of_a_plain_container() -> None:
    document = spec()
    process = document["process"]
    assert process["terminal"] is False
    assert process["user"] == {"uid": 0, "gid": 0}
    assert process["env"] == [DEFAULT_PATH]
    assert process["cwd"] == "/"
    assert process["rlimits"] == []
    assert process["noNewPrivileges"] is False
    assert process["oomScoreAdj"] == 0
    assert document["root"] == {"path": ROOTFS, "readonly": False}
    assert document["hostname"] == CID[:12]
    linux = document["linux"]
    assert linux["cgroupsPath"] == f"asyncstart/{CID}"
    assert linux["resources"] == {"devices": [{"allow": False, "access": "rwm"}]}
    assert linux["sysctl"] == {}
    assert "uidMappings" not in linux and "gidMappings" not in linux
    assert "/proc/kcore" in linux["maskedPaths"] and "/proc/sys" in linux["readonlyPaths"]
    # dockerd's default mounts, each once, then /dev/shm (64 MiB unless ShmSize says).
    destinations = [m["destination"] for m in document["mounts"]]
    assert len(destinations) == len(set(destinations))
    for target in ("/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue"):
        assert target in destinations
    assert only_mount(document, "/sys")["type"] == "sysfs"
    shm = only_mount(document, "/dev/shm")
    assert shm["type"] == "tmpfs" and f"size={64 * 1024 * 1024}" in shm["options"]


def test_env_keeps_its_order_and_gets_a_path_only_if_it_has_none() -> None:
    env = spec({"Env": ["A=1", "B=2"]})["process"]["env"]
    assert env == [DEFAULT_PATH, "A=1", "B=2"]
    own_path = ["A=1", "PATH=/opt/bin"]
    assert spec({"Env": own_path})["process"]["env"] == own_path


def test_a_tty_gets_term_unless_the_container_sets_it() -> None:
    document = spec({"Tty": True, "Env": ["A=1"]})
    assert document["process"]["terminal"] is True
    assert document["process"]["env"] == [DEFAULT_PATH, "A=1", "TERM=xterm"]
    own = spec({"Tty": True, "Env": ["TERM=vt100"]})["process"]["env"]
    assert [item for item in own if item.startswith("TERM=")] == ["TERM=vt100"]
    assert not any(item.startswith("TERM=") for item in spec({"Tty": False})["process"]["env"])


def test_working_dir() -> None:
    assert spec({"WorkingDir": "/srv/app"})["process"]["cwd"] == "/srv/app"


# -- user ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "uid", "gid"),
    [
        ("", 0, 0),
        ("web", 1000, 1001),  # a name: uid and primary group from passwd
        ("1000", 1000, 1001),  # a uid that passwd knows: its primary group
        ("4242", 4242, 0),  # a uid passwd does not know: group 0, as dockerd
        ("web:staff", 1000, 50),  # a group name from /etc/group
        ("web:77", 1000, 77),  # a numeric group needs no lookup
        ("4242:4343", 4242, 4343),
        ("daemon", 1, 1),
        ("root:www-data", 0, 33),
    ],
)
def test_user_and_group_by_name_or_number(user: str, uid: int, gid: int) -> None:
    document = spec({"User": user}, passwd=PASSWD, group=GROUP)
    assert document["process"]["user"] == {"uid": uid, "gid": gid}


def test_numeric_user_and_group_need_no_files() -> None:
    assert spec({"User": "12:34"})["process"]["user"] == {"uid": 12, "gid": 34}


@pytest.mark.parametrize(
    ("user", "passwd", "group", "message"),
    [
        ("nobody", PASSWD, GROUP, "unable to find user nobody: no matching entries in passwd file"),
        ("web", None, None, "unable to find user web: no matching entries in passwd file"),
        # An entry without a gid field is no entry.
        ("short", PASSWD, GROUP, "unable to find user short: no matching entries in passwd file"),
        (
            "web:wheel",
            PASSWD,
            GROUP,
            "unable to find group wheel: no matching entries in group file",
        ),
        ("0:staff", PASSWD, None, "unable to find group staff: no matching entries in group file"),
    ],
)
def test_unknown_user_or_group_is_a_400(
    user: str, passwd: str | None, group: str | None, message: str
) -> None:
    with pytest.raises(errors.InvalidParameter) as caught:
        spec({"User": user}, passwd=passwd, group=group)
    assert caught.value.status == 400
    assert str(caught.value) == message


# -- hostname, namespaces, user namespaces --------------------------------------------------


def test_hostname_from_the_network_then_the_config_then_the_id() -> None:
    assert spec({"Hostname": "box"}, hostname="peer")["hostname"] == "peer"
    assert spec({"Hostname": "box"})["hostname"] == "box"
    assert spec({"Hostname": ""})["hostname"] == CID[:12]


def _namespaces(document: dict[str, Any]) -> dict[str, dict[str, str]]:
    spaces = document["linux"]["namespaces"]
    by_type = {ns["type"]: ns for ns in spaces}
    assert len(by_type) == len(spaces), "a namespace type is listed twice"
    return by_type


def test_namespaces_for_each_kind_of_network() -> None:
    base = {"mount", "uts", "ipc", "pid"}
    host = _namespaces(spec(netns=None))  # the host's network namespace: none of its own
    assert set(host) == base
    fresh = _namespaces(spec(netns=""))  # a new, empty one (runc creates it)
    assert set(fresh) == base | {"network"} and "path" not in fresh["network"]
    joined = _namespaces(spec(netns="/run/asyncstart/netns/abc"))  # one made by the driver
    assert joined["network"] == {"type": "network", "path": "/run/asyncstart/netns/abc"}
    for spaces in (host, fresh, joined):
        assert all("path" not in spaces[kind] for kind in base)


def test_user_namespace_maps_container_root() -> None:
    document = spec(userns=(100000, 200000, 65536), netns="")
    assert "user" in _namespaces(document)
    linux = document["linux"]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": 100000, "size": 65536}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": 200000, "size": 65536}]
    # Its own fresh network namespace: sysfs can be mounted as usual.
    assert only_mount(document, "/sys")["type"] == "sysfs"


def test_user_namespace_in_a_network_namespace_made_outside_binds_the_hosts_sys() -> None:
    document = spec(userns=(100000, 100000, 65536), netns="/run/netns/abc")
    sys_mount = only_mount(document, "/sys")
    assert sys_mount["type"] == "bind" and sys_mount["source"] == "/sys"
    assert "ro" in sys_mount["options"] and "rbind" in sys_mount["options"]
    # Without a user namespace, the same network namespace keeps sysfs.
    assert only_mount(spec(netns="/run/netns/abc"), "/sys")["type"] == "sysfs"
    # The host's network namespace (no netns of its own) keeps sysfs too.
    assert only_mount(spec(userns=(1, 1, 1), netns=None), "/sys")["type"] == "sysfs"


# -- mounts -------------------------------------------------------------------------------


def test_binds_read_write_and_read_only() -> None:
    document = spec(host={"Binds": ["/srv/data:/data", "/etc/app:/conf:ro", "/x:/y:rw,z"]})
    data = only_mount(document, "/data")
    assert (data["type"], data["source"]) == ("bind", "/srv/data")
    assert "rw" in data["options"] and "ro" not in data["options"]
    assert "rbind" in data["options"]
    conf = only_mount(document, "/conf")
    assert conf["source"] == "/etc/app" and "ro" in conf["options"]
    assert "rw" not in conf["options"]
    assert "rw" in only_mount(document, "/y")["options"]


def test_binds_go_after_the_default_mounts() -> None:
    document = spec(host={"Binds": ["/a:/dev/shm/sub"]})
    destinations = [m["destination"] for m in document["mounts"]]
    assert destinations.index("/dev/shm/sub") > destinations.index("/dev/shm")


@pytest.mark.parametrize("bind", ["/srv/data:data", "rel:rel"])
def test_a_bind_dockerd_cannot_read_is_a_400(bind: str) -> None:
    with pytest.raises(errors.InvalidParameter) as caught:
        spec(host={"Binds": [bind]})
    assert str(caught.value).startswith(f"invalid volume specification: '{bind}'")
    assert caught.value.status == 400


def test_mounts_of_type_bind() -> None:
    document = spec(
        host={
            "Mounts": [
                {"Type": "bind", "Source": "/srv/a", "Target": "/a", "ReadOnly": True},
                {"Type": "bind", "Source": "/srv/b", "Target": "/b"},
            ]
        }
    )
    a, b = only_mount(document, "/a"), only_mount(document, "/b")
    assert (a["source"], b["source"]) == ("/srv/a", "/srv/b")
    assert "ro" in a["options"] and "rw" not in a["options"]
    assert "rw" in b["options"] and "ro" not in b["options"]


def test_mounts_of_type_tmpfs_and_an_unknown_type() -> None:
    document = spec(host={"Mounts": [{"Type": "tmpfs", "Target": "/scratch"}]})
    assert only_mount(document, "/scratch")["type"] == "tmpfs"
    with pytest.raises(errors.InvalidParameter, match="mount type unknown"):
        spec(host={"Mounts": [{"Type": "npipe", "Source": "v", "Target": "/v"}]})


def test_tmpfs_gets_safe_options_and_its_own() -> None:
    document = spec(host={"Tmpfs": {"/run": "rw,size=10m", "/tmp": ""}})
    run = only_mount(document, "/run")
    assert (run["type"], run["source"]) == ("tmpfs", "tmpfs")
    for option in ("nosuid", "noexec", "nodev", "rw", "size=10m"):
        assert option in run["options"]
    assert sorted(only_mount(document, "/tmp")["options"]) == ["nodev", "noexec", "nosuid"]


def test_shm_size() -> None:
    shm = only_mount(spec(host={"ShmSize": 1024 * 1024}), "/dev/shm")
    assert f"size={1024 * 1024}" in shm["options"]
    assert "mode=1777" in shm["options"]


def test_network_files_are_bind_mounted() -> None:
    files = {"/etc/hosts": "/data/c/hosts", "/etc/resolv.conf": "/data/c/resolv.conf"}
    document = spec(network_files=files)
    for target, source in files.items():
        mount = only_mount(document, target)
        assert (mount["type"], mount["source"]) == ("bind", source)
        assert "rbind" in mount["options"]
    assert mounts_at(document, "/etc/hostname") == []


def test_readonly_rootfs() -> None:
    assert spec(host={"ReadonlyRootfs": True})["root"]["readonly"] is True


# -- capabilities and security --------------------------------------------------------------


def test_capabilities_default_set_in_every_set() -> None:
    caps = spec()["process"]["capabilities"]
    assert set(caps) == {"bounding", "effective", "permitted"}
    for kind in caps.values():
        assert kind == sorted(DEFAULT_CAPABILITIES)


def test_capabilities_added_and_dropped_with_or_without_the_prefix() -> None:
    caps = spec(host={"CapAdd": ["sys_admin", "CAP_NET_ADMIN"], "CapDrop": ["chown", "CAP_KILL"]})
    bounding = caps["process"]["capabilities"]["bounding"]
    expected = (set(DEFAULT_CAPABILITIES) | {"CAP_SYS_ADMIN", "CAP_NET_ADMIN"}) - {
        "CAP_CHOWN",
        "CAP_KILL",
    }
    assert bounding == sorted(expected)
    assert caps["process"]["capabilities"]["effective"] == bounding
    # Dropping wins over adding the same capability.
    both = spec(host={"CapAdd": ["mknod"], "CapDrop": ["MKNOD"]})
    assert "CAP_MKNOD" not in both["process"]["capabilities"]["bounding"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (None, False),
        (["no-new-privileges"], True),
        (["no-new-privileges:true"], True),
        (["no-new-privileges:false"], False),
        (["seccomp=unconfined"], False),
    ],
)
def test_no_new_privileges(options: list[str] | None, expected: bool) -> None:
    assert spec(host={"SecurityOpt": options})["process"]["noNewPrivileges"] is expected


def test_sysctls_and_oom_score_adj() -> None:
    document = spec(host={"Sysctls": {"net.core.somaxconn": "1024"}, "OomScoreAdj": -500})
    assert document["linux"]["sysctl"] == {"net.core.somaxconn": "1024"}
    assert document["process"]["oomScoreAdj"] == -500


def test_cgroup_parent() -> None:
    document = spec(cgroup_parent="system.slice/engine")
    assert document["linux"]["cgroupsPath"] == f"system.slice/engine/{CID}"


# -- resources ----------------------------------------------------------------------------


def test_memory_cpus_shares_and_pids() -> None:
    resources = spec(
        host={
            "Memory": 256 * 1024 * 1024,
            "NanoCpus": 1_500_000_000,  # --cpus 1.5
            "CpuShares": 512,
            "PidsLimit": 100,
        }
    )["linux"]["resources"]
    assert resources["memory"] == {"limit": 256 * 1024 * 1024}
    # 1.5 CPUs: 150 ms of every 100 ms period.
    assert resources["cpu"] == {"quota": 150_000, "period": 100_000, "shares": 512}
    assert resources["pids"] == {"limit": 100}
    assert resources["devices"] == [{"allow": False, "access": "rwm"}]


def test_cpu_shares_alone_and_a_fraction_of_a_cpu() -> None:
    assert spec(host={"CpuShares": 2048})["linux"]["resources"]["cpu"] == {"shares": 2048}
    quarter = spec(host={"NanoCpus": 250_000_000})["linux"]["resources"]["cpu"]
    assert quarter == {"quota": 25_000, "period": 100_000}


@pytest.mark.parametrize("limit", [None, 0, -1])
def test_no_pids_limit_unless_positive(limit: int | None) -> None:
    assert "pids" not in spec(host={"PidsLimit": limit})["linux"]["resources"]


# -- ulimits ------------------------------------------------------------------------------


def test_ulimits_become_rlimits() -> None:
    document = spec(
        host={
            "Ulimits": [
                {"Name": "nofile", "Soft": 1024, "Hard": 4096},
                {"Name": "nproc", "Soft": 10, "Hard": 20},
            ]
        },
        host_hard_limits={"RLIMIT_NOFILE": 4096, "RLIMIT_NPROC": -1},
    )
    assert document["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024},
        {"type": "RLIMIT_NPROC", "hard": 20, "soft": 10},
    ]


def test_a_ulimit_over_the_daemons_hard_limit_is_a_400() -> None:
    with pytest.raises(errors.InvalidParameter) as caught:
        spec(
            host={"Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 4097}]},
            host_hard_limits={"RLIMIT_NOFILE": 4096},
        )
    assert caught.value.status == 400
    assert str(caught.value) == (
        "ulimit nofile: hard limit 4097 is above the daemon's own hard limit 4096"
    )


def test_an_unlimited_or_unknown_host_limit_caps_nothing() -> None:
    huge = {"Ulimits": [{"Name": "core", "Soft": 10**12, "Hard": 10**12}]}
    for limits in ({"RLIMIT_CORE": -1}, {}, None):
        rlimits = spec(host=huge, host_hard_limits=limits)["process"]["rlimits"]
        assert rlimits == [{"type": "RLIMIT_CORE", "hard": 10**12, "soft": 10**12}]


def test_an_unknown_ulimit_is_a_400() -> None:
    with pytest.raises(errors.InvalidParameter) as caught:
        spec(host={"Ulimits": [{"Name": "cores", "Soft": 1, "Hard": 1}]})
    assert str(caught.value) == "invalid ulimit type: cores"


@pytest.mark.parametrize(
    "name",
    ["core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
     "rss", "rtprio", "rttime", "sigpending", "stack", "as"],
)  # fmt: skip
def test_every_docker_ulimit_name_is_known(name: str) -> None:
    (rlimit,) = spec(host={"Ulimits": [{"Name": name, "Soft": 1, "Hard": 2}]})["process"]["rlimits"]
    assert rlimit == {"type": f"RLIMIT_{name.upper()}", "hard": 2, "soft": 1}


def test_the_spec_does_not_share_state_between_calls() -> None:
    first = spec(userns=(1, 1, 1), netns="/run/netns/a", host={"Binds": ["/a:/a"]})
    second = spec()
    assert only_mount(second, "/sys")["type"] == "sysfs"
    assert mounts_at(second, "/a") == []
    assert only_mount(first, "/sys")["type"] == "bind"


def test_editing_a_returned_spec_does_not_change_the_next_one() -> None:
    only_mount(spec(), "/proc")["options"].append("edited")
    assert "edited" not in only_mount(spec(), "/proc")["options"]


def test_all_capabilities_added_or_dropped_as_dockerd() -> None:
    everything = spec(host={"CapAdd": ["ALL"], "CapDrop": ["kill"]})["process"]["capabilities"]
    assert "CAP_SYS_ADMIN" in everything["bounding"] and "CAP_KILL" not in everything["bounding"]
    assert len(everything["bounding"]) == len(CAPABILITIES) - 1
    only = spec(host={"CapDrop": ["ALL"], "CapAdd": ["chown"]})["process"]["capabilities"]
    assert only["bounding"] == ["CAP_CHOWN"]
