"""Every setting held is applied or refused: the platform checks, the defaults dockerd fills in
at create, and what the spec makes of each setting (pure; the real-container side is in
``test_settings_runc.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from asyncstart import errors
from asyncstart.config import Config, HostConfig, merge_image_defaults, parse_host_config
from asyncstart.hostinfo import host_facts
from asyncstart.settings import (
    DEFAULT_SHM_SIZE,
    HostFacts,
    fill_defaults,
    format_id_list,
    parse_id_list,
    refuse_health_check,
    validate_platform,
)
from asyncstart.spec import MASKED_PATHS, READONLY_PATHS, build_spec

from .conftest import Engine

#: dockerd's HostConfig (api/types/container/hostconfig.go, Resources embedded), written out
#: here on its own so a field the struct lacks is found.
DOCKERD_HOST_CONFIG = """
Binds ContainerIDFile LogConfig NetworkMode PortBindings RestartPolicy AutoRemove VolumeDriver
VolumesFrom ConsoleSize Annotations CapAdd CapDrop CgroupnsMode Dns DnsOptions DnsSearch
ExtraHosts GroupAdd IpcMode Cgroup Links OomScoreAdj PidMode Privileged PublishAllPorts
ReadonlyRootfs SecurityOpt StorageOpt Tmpfs UTSMode UsernsMode ShmSize Sysctls Runtime Isolation
CpuShares Memory NanoCpus CgroupParent BlkioWeight BlkioWeightDevice BlkioDeviceReadBps
BlkioDeviceWriteBps BlkioDeviceReadIOps BlkioDeviceWriteIOps CpuPeriod CpuQuota CpuRealtimePeriod
CpuRealtimeRuntime CpusetCpus CpusetMems Devices DeviceCgroupRules DeviceRequests
MemoryReservation MemorySwap MemorySwappiness OomKillDisable PidsLimit Ulimits CpuCount
CpuPercent IOMaximumIOps IOMaximumBandwidth Mounts MaskedPaths ReadonlyPaths Init
""".split()  # noqa: SIM905 (a list of names to compare, as dockerd's file has them)

FACTS = HostFacts(cpus=2, cpuset_cpus=frozenset({0, 1}), cpuset_mems=frozenset({0}))


def test_the_host_config_holds_every_field_dockerd_has_in_its_order() -> None:
    assert list(HostConfig.__struct_encode_fields__) == DOCKERD_HOST_CONFIG


def _host(**fields: Any) -> HostConfig:
    return parse_host_config(fields)


@pytest.mark.parametrize(
    ("text", "ids"),
    [("", set()), ("0", {0}), ("0-2,5", {0, 1, 2, 5}), ("1,1-2", {1, 2})],
)
def test_cpuset_lists_parse_and_print_as_the_kernel_writes_them(text: str, ids: set[int]) -> None:
    assert parse_id_list(text) == ids
    assert parse_id_list(format_id_list(ids)) == ids
    assert format_id_list({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"


@pytest.mark.parametrize("text", ["a", "1-", "-1", "3-1", "1,,2", " 1"])
def test_malformed_cpuset_lists_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_id_list(text)


@pytest.mark.parametrize(
    ("facts", "host", "message"),
    [
        (FACTS, {"NanoCpus": 3 * 10**9}, "range of CPUs is from 0.01 to 2.00"),
        (FACTS, {"CpusetMems": "1"}, "Requested memory nodes are not available"),
        (FACTS, {"BlkioWeight": 500}, "does not support Block I/O weight"),
        (
            HostFacts(blkio_weight=True),
            {"BlkioWeight": 5},
            "Range of blkio weight is from 10 to 1000",
        ),
        (
            HostFacts(swap_limit=False),
            {"Memory": 8 << 20, "MemorySwap": 16 << 20},
            "does not support swap limit",
        ),
        (HostFacts(userns=True), {"PidMode": "host"}, "cannot share the host PID namespace"),
        (  # cgroup v2: runc writes neither, dockerd discards both
            HostFacts(memory_swappiness=False),
            {"MemorySwappiness": 0},
            "does not support memory swappiness",
        ),
        (
            HostFacts(oom_kill_disable=False),
            {"Memory": 8 << 20, "OomKillDisable": True},
            "does not support OomKillDisable",
        ),
        (HostFacts(userns=True), {"UsernsMode": "host"}, "HostConfig.UsernsMode"),
        (FACTS, {"ConsoleSize": [1, -1]}, "invalid ConsoleSize"),
        (FACTS, {"GroupAdd": [str(2**40)]}, "not a valid gid"),
    ],
)
def test_what_the_machine_cannot_do_is_refused(
    facts: HostFacts, host: dict[str, Any], message: str
) -> None:
    """dockerd discards some of these with a warning; a setting discarded is a setting ignored,
    so the engine refuses them."""
    with pytest.raises(errors.InvalidParameter, match=message):
        validate_platform(Config(), _host(**host), facts)


def test_what_the_machine_can_do_passes() -> None:
    host = _host(
        PidMode="host",
        IpcMode="none",
        UTSMode="host",
        CgroupnsMode="private",
        CpusetCpus="0-1",
        NanoCpus=2 * 10**9,
        Memory=8 << 20,
        MemorySwap=-1,
        MemorySwappiness=-1,
        GroupAdd=["audio", "50"],
        Annotations={"a": "b"},
        ConsoleSize=[24, 80],
    )
    validate_platform(Config(), host, FACTS)


def test_create_fills_in_what_dockerd_fills_in() -> None:
    host = _host(Memory=8 << 20, PidsLimit=0, MemorySwappiness=-1)
    fill_defaults(host, FACTS, runtime="runc", masked=MASKED_PATHS, readonly=READONLY_PATHS)
    assert (host.ipc_mode, host.cgroupns_mode, host.shm_size) == (
        "private",
        "host",
        DEFAULT_SHM_SIZE,
    )
    assert host.memory_swap == 16 << 20
    assert (host.oom_kill_disable, host.pids_limit, host.memory_swappiness) == (False, None, None)
    assert host.masked_paths == list(MASKED_PATHS)
    v2 = _host(MaskedPaths=[], Memory=8 << 20)
    v2_facts = HostFacts(cgroup2=True, swap_limit=False)
    fill_defaults(v2, v2_facts, runtime="runc", masked=["/x"], readonly=[])
    assert (v2.cgroupns_mode, v2.masked_paths, v2.memory_swap) == ("private", [], -1)


def _spec(**host: Any) -> dict[str, Any]:
    return build_spec(
        "c" * 64,
        Config(cmd=["true"], tty=True, domainname="example.test"),
        _host(**host),
        rootfs="/r",
        netns=None,
        group="audio:x:63:\n",
    )


def test_the_spec_applies_namespace_modes() -> None:
    kinds = [ns["type"] for ns in _spec()["linux"]["namespaces"]]
    assert kinds == ["mount", "uts", "ipc", "pid"]
    shared = _spec(PidMode="host", IpcMode="host", UTSMode="host", CgroupnsMode="private")
    assert [ns["type"] for ns in shared["linux"]["namespaces"]] == ["mount", "cgroup"]
    assert "hostname" not in shared, "the host's name is not the container's to set"
    shm = [m for m in shared["mounts"] if m["destination"] == "/dev/shm"]
    assert shm[0]["source"] == "/dev/shm" and shm[0]["type"] == "bind"
    assert not [m for m in _spec(IpcMode="none")["mounts"] if m["destination"] == "/dev/shm"]


def test_the_spec_applies_resources() -> None:
    spec = _spec(
        Memory=8 << 20,
        MemoryReservation=7 << 20,
        MemorySwap=16 << 20,
        MemorySwappiness=3,
        OomKillDisable=True,
        CpuPeriod=50_000,
        CpuQuota=10_000,
        CpusetCpus="1",
        CpusetMems="0",
        BlkioWeight=300,
        CgroupParent="mine",
    )
    resources = spec["linux"]["resources"]
    assert resources["memory"] == {
        "limit": 8 << 20,
        "reservation": 7 << 20,
        "swap": 16 << 20,
        "swappiness": 3,
        "disableOOMKiller": True,
    }
    assert resources["cpu"] == {"period": 50_000, "quota": 10_000, "cpus": "1", "mems": "0"}
    assert resources["blockIO"] == {"weight": 300}
    assert spec["linux"]["cgroupsPath"] == "mine/" + "c" * 64
    nano = _spec(NanoCpus=5 * 10**8)["linux"]["resources"]["cpu"]
    assert nano == {"period": 100_000, "quota": 50_000}


def test_the_spec_applies_the_rest() -> None:
    spec = _spec(
        GroupAdd=["audio", "7"],
        ConsoleSize=[33, 101],
        Annotations={"org.example": "yes"},
        MaskedPaths=["/m"],
        ReadonlyPaths=[],
    )
    assert spec["process"]["user"]["additionalGids"] == [63, 7]
    assert spec["process"]["consoleSize"] == {"height": 33, "width": 101}
    assert spec["annotations"] == {"org.example": "yes"}
    assert (spec["linux"]["maskedPaths"], spec["linux"]["readonlyPaths"]) == (["/m"], [])
    assert spec["linux"]["sysctl"]["kernel.domainname"] == "example.test"
    with pytest.raises(errors.InvalidParameter, match="unable to find group nope"):
        _spec(GroupAdd=["nope"])


@pytest.mark.anyio
async def test_inspect_shows_every_field_and_the_defaults(engine: Engine) -> None:
    """Clients read back ``Init``, ``UTSMode``, ``MemorySwap``, ``CgroupnsMode``... and found
    nothing."""
    cid = await engine.daemon.container_create(
        "web", {"Image": "busybox", "Cmd": ["true"]}, {"Memory": 8 << 20}
    )
    host = (await engine.daemon.container_inspect(cid))["HostConfig"]
    assert list(host) == DOCKERD_HOST_CONFIG
    assert (host["IpcMode"], host["ShmSize"]) == ("private", 64 << 20)
    assert host["Runtime"] == engine.daemon.system_info()["DefaultRuntime"]
    assert host["MemorySwap"] == 16 << 20
    assert (host["OomKillDisable"], host["ConsoleSize"]) == (False, [0, 0])
    assert host["MaskedPaths"] == list(MASKED_PATHS)


def test_the_machines_facts_are_read_from_its_cgroup_tree(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (v2 / "cpuset.cpus.effective").write_text("0-3\n")
    facts = host_facts(root=v2)
    assert facts.cgroup2 and facts.cpuset_cpus == {0, 1, 2, 3}
    assert not (facts.memory_swappiness or facts.oom_kill_disable), "runc writes neither on v2"
    v1 = tmp_path / "v1"
    for name in ("memory/memory.swappiness", "memory/memory.oom_control", "cpuset/cpuset.cpus"):
        (v1 / name).parent.mkdir(parents=True, exist_ok=True)
        (v1 / name).write_text("0\n")
    facts = host_facts(root=v1, userns=True)
    assert not facts.cgroup2 and facts.memory_swappiness and facts.oom_kill_disable
    assert not (facts.swap_limit or facts.blkio_weight) and facts.userns


def test_keys_match_in_any_case_and_null_is_the_default_as_go_decodes_them() -> None:
    """``{"memory": ...}`` gave a container with no memory limit; ``"VolumeDriver": null``
    was a 400. dockerd's decoder matches field names in any case and leaves a null field."""
    host = parse_host_config({"memory": 8 << 20, "PRIVILEGED": False, "VolumeDriver": None})
    assert (host.memory, host.volume_driver) == (8 << 20, "")
    assert parse_host_config({"restartpolicy": {"Name": "always"}}).restart_policy.name == "always"


def test_the_image_gives_labels_stop_signal_ports_and_its_health_check() -> None:
    """dockerd's merge: they were dropped, so an image's HEALTHCHECK was silently not run."""
    image = {
        "Cmd": ["sh"],
        "Labels": {"a": "image", "b": "image"},
        "StopSignal": "SIGQUIT",
        "ExposedPorts": {"80/tcp": {}},
        "Healthcheck": {"Test": ["CMD", "true"]},
    }
    config = Config(labels={"b": "mine"}, exposed_ports={"81/tcp": {}})
    merge_image_defaults(config, image)
    assert config.labels == {"a": "image", "b": "mine"}
    assert (config.stop_signal, set(config.exposed_ports or ())) == (
        "SIGQUIT",
        {"80/tcp", "81/tcp"},
    )
    with pytest.raises(errors.InvalidParameter, match="Config.Healthcheck"):
        refuse_health_check(config)
    disabled = Config(healthcheck={"Test": ["NONE"]})  # --no-healthcheck
    merge_image_defaults(disabled, image)
    refuse_health_check(disabled)
