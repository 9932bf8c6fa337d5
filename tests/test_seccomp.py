"""The seccomp filter and ``SecurityOpt``, on their own: no root, no runc.

A resolved filter is checked the way the kernel would apply it (:func:`decide`: the rules for
one system call are alternatives, a rule holds when all its argument conditions do), so the
tests say what a container may do, not how the JSON happens to be laid out.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from asyncstart import errors
from asyncstart.config import parse_config, parse_host_config, validate_host_config
from asyncstart.seccomp import MIN_KERNEL, load_profile, parse_kernel_release, seccomp_filter
from asyncstart.seccomp_policy import CAPABILITY_SYSCALLS, FROM_KERNEL, SYSCALL_GROUPS
from asyncstart.security import SecurityOptions, go_quote, parse_security_opt
from asyncstart.spec import DEFAULT_CAPABILITIES, build_spec

from .conftest import Engine

pytestmark = pytest.mark.anyio

ALLOW, DENY, ENOSYS, EPERM = "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", 38, 1
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET = 0x10000000, 0x00020000, 0x40000000
#: What glibc's pthread_create and fork pass to clone (no namespace).
CLONE_THREAD_FLAGS, SIGCHLD = 0x3D0F00, 17
AF_INET, AF_UNIX, AF_NETLINK, AF_ALG, AF_VSOCK = 2, 1, 16, 38, 40
KERNEL = (6, 1)


def default_filter(
    *added: str, arch: str = "amd64", kernel: tuple[int, int] = KERNEL
) -> dict[str, Any]:
    found = seccomp_filter(None, (*DEFAULT_CAPABILITIES, *added), arch=arch, kernel=kernel)
    assert found is not None
    return found


_OPS = {
    "SCMP_CMP_NE": lambda arg, v, _: arg != v,
    "SCMP_CMP_LT": lambda arg, v, _: arg < v,
    "SCMP_CMP_LE": lambda arg, v, _: arg <= v,
    "SCMP_CMP_EQ": lambda arg, v, _: arg == v,
    "SCMP_CMP_GE": lambda arg, v, _: arg >= v,
    "SCMP_CMP_GT": lambda arg, v, _: arg > v,
    "SCMP_CMP_MASKED_EQ": lambda arg, mask, two: arg & mask == two,
}


def decide(document: dict[str, Any], syscall: str, *args: int) -> tuple[str, int | None]:
    """(action, errno) the filter gives ``syscall(args...)``."""
    for rule in document.get("syscalls", ()):
        if syscall not in rule["names"]:
            continue
        conditions = rule.get("args") or ()
        if all(
            _OPS[c["op"]](args[c["index"]], c["value"], c.get("valueTwo", 0)) for c in conditions
        ):
            return rule["action"], rule.get("errnoRet")
    return document["defaultAction"], document.get("defaultErrnoRet")


def allowed(document: dict[str, Any], syscall: str, *args: int) -> bool:
    return decide(document, syscall, *args, *[0] * (6 - len(args)))[0] == ALLOW


# -- the default profile ----------------------------------------------------------------------


def test_the_default_refuses_with_eperm_and_allows_what_programs_use() -> None:
    document = default_filter()
    assert (document["defaultAction"], document["defaultErrnoRet"]) == (DENY, EPERM)
    for syscall in (
        "read",
        "openat",
        "execve",
        "wait4",
        "rt_sigaction",
        "epoll_wait",
        "futex",
        "mkdirat",
        "setsockopt",
        "prctl",
        "getrandom",
        "clock_gettime",
    ):
        assert allowed(document, syscall), syscall
    for syscall in (
        "mount",
        "umount2",
        "unshare",
        "setns",
        "kcmp",
        "reboot",
        "init_module",
        "acct",
        "settimeofday",
        "iopl",
        "bpf",
        "keyctl",
        "io_uring_setup",
        "open_by_handle_at",
        "syslog",
        "vhangup",
        "ptrace_typo",
    ):
        assert decide(document, syscall) == (DENY, EPERM), syscall


def test_the_groups_are_disjoint_from_the_capability_rows() -> None:
    everyone = [name for group in SYSCALL_GROUPS.values() for name in group]
    assert len(everyone) == len(set(everyone)), "a system call in two groups"
    gated = {name for names in CAPABILITY_SYSCALLS.values() for name in names}
    assert not set(everyone) & gated, "a gated call allowed to everyone"
    assert not set(everyone) & {name for _, names in FROM_KERNEL for name in names}


def test_default_capabilities_hold_chroot_but_nothing_else_gated() -> None:
    document = default_filter()
    assert allowed(document, "chroot")  # CAP_SYS_CHROOT is a default capability
    gated = {name for cap, names in CAPABILITY_SYSCALLS.items() if cap != "CAP_SYS_CHROOT"
             for name in names}  # fmt: skip
    let_through = {name for name in gated if allowed(document, name, 0)}
    # clone (without namespace flags) and, on kernels from 4.8, ptrace are for everyone.
    assert let_through == {"clone", "ptrace", "process_vm_readv", "process_vm_writev"}


@pytest.mark.parametrize("capability", sorted(CAPABILITY_SYSCALLS))
def test_each_capability_unlocks_its_system_calls(capability: str) -> None:
    caps = set(DEFAULT_CAPABILITIES) - {capability}
    without = seccomp_filter(None, caps, arch="amd64", kernel=KERNEL)
    with_it = seccomp_filter(None, caps | {capability}, arch="amd64", kernel=KERNEL)
    assert without is not None and with_it is not None
    other_rows = {
        name for cap, names in CAPABILITY_SYSCALLS.items() if cap in caps for name in names
    }
    for syscall in CAPABILITY_SYSCALLS[capability]:
        assert allowed(with_it, syscall, 0), syscall
        if syscall not in other_rows and syscall not in (
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "clone",
        ):
            assert not allowed(without, syscall, 0), syscall


def test_sys_admin_lets_mount_unshare_and_setns_through() -> None:
    document = default_filter("CAP_SYS_ADMIN")
    for syscall in ("mount", "umount2", "unshare", "setns", "sethostname", "fsopen", "move_mount"):
        assert allowed(document, syscall), syscall
    assert allowed(document, "clone", CLONE_NEWUSER | CLONE_NEWNS | SIGCHLD)
    assert allowed(document, "clone3"), "clone3 is allowed whole with CAP_SYS_ADMIN"


def test_sys_ptrace_adds_kcmp_and_pidfd_getfd() -> None:
    plain, traced = default_filter(), default_filter("CAP_SYS_PTRACE")
    for syscall in ("kcmp", "pidfd_getfd", "process_madvise"):
        assert not allowed(plain, syscall) and allowed(traced, syscall), syscall


def test_ptrace_is_allowed_from_kernel_4_8_only() -> None:
    """Before 4.8 a tracer could change a system call after the filter had checked it."""
    for syscall in ("ptrace", "process_vm_readv", "process_vm_writev"):
        assert allowed(default_filter(kernel=(4, 8)), syscall), syscall
        assert not allowed(default_filter(kernel=(4, 4)), syscall), syscall
        assert allowed(default_filter("CAP_SYS_PTRACE", kernel=(4, 4)), syscall), syscall


def test_clone_may_not_create_namespaces_without_sys_admin() -> None:
    document = default_filter()
    assert allowed(document, "clone", CLONE_THREAD_FLAGS)  # threads
    assert allowed(document, "clone", SIGCHLD)  # fork
    for flag in (
        CLONE_NEWUSER,
        CLONE_NEWNS,
        CLONE_NEWNET,
        0x02000000,
        0x04000000,
        0x08000000,
        0x20000000,
    ):
        assert decide(document, "clone", flag | SIGCHLD, 0) == (DENY, EPERM), hex(flag)
    rule = next(r for r in document["syscalls"] if r["names"] == ["clone"])
    assert rule["args"] == [{"index": 0, "value": 0x7E020000, "op": "SCMP_CMP_MASKED_EQ"}]


def test_s390_passes_clone_flags_second() -> None:
    rules = [r for r in default_filter(arch="s390x")["syscalls"] if r["names"] == ["clone"]]
    assert [r["args"][0]["index"] for r in rules] == [1]


def test_clone3_says_enosys_so_the_c_library_falls_back_to_clone() -> None:
    assert decide(default_filter(), "clone3") == (DENY, ENOSYS)


@pytest.mark.parametrize(
    ("persona", "ok"),
    [(0x0, True), (0x8, True), (0x20000, True), (0x20008, True), (0xFFFFFFFF, True),
     (0x0040000, False), (0x0400000, False), (0x1, False)],
)  # fmt: skip
def test_personality_only_harmless_personas(persona: int, ok: bool) -> None:
    assert allowed(default_filter(), "personality", persona) is ok


@pytest.mark.parametrize(
    ("family", "ok"),
    [(AF_UNIX, True), (AF_INET, True), (AF_NETLINK, True), (AF_ALG, False), (39, True),
     (AF_VSOCK, False), (41, True), (44, True)],
)  # fmt: skip
def test_socket_refuses_vsock_and_alg(family: int, ok: bool) -> None:
    assert allowed(default_filter(), "socket", family) is ok


@pytest.mark.parametrize(
    ("arch", "architectures", "own", "foreign"),
    [
        ("amd64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
         ["arch_prctl", "modify_ldt"], ["set_tls", "cacheflush"]),
        ("arm64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
         ["set_tls", "cacheflush", "arm_fadvise64_64"], ["arch_prctl", "modify_ldt"]),
        ("s390x", ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"], ["s390_runtime_instr"], ["arch_prctl"]),
        ("riscv64", ["SCMP_ARCH_RISCV64"], ["riscv_flush_icache"], ["set_tls"]),
        ("ppc64le", None, ["swapcontext"], ["arch_prctl"]),
    ],
)  # fmt: skip
def test_architectures_and_their_own_system_calls(
    arch: str, architectures: list[str] | None, own: list[str], foreign: list[str]
) -> None:
    document = default_filter(arch=arch)
    assert document.get("architectures") == architectures
    for syscall in own:
        assert allowed(document, syscall), syscall
    for syscall in foreign:
        assert not allowed(document, syscall), syscall


def test_resolution_is_cached_but_every_caller_gets_its_own_copy() -> None:
    first = default_filter()
    first["syscalls"][0]["names"].append("keyctl")
    first["defaultAction"] = ALLOW
    again = default_filter()
    assert again["defaultAction"] == DENY and not allowed(again, "keyctl")


def test_kernel_release() -> None:
    assert parse_kernel_release("6.1.0-18-amd64") == (6, 1)
    assert parse_kernel_release("3.12-1-amd64") == (3, 12)
    assert parse_kernel_release("6.18.44-fc-v1147") == (6, 18)
    assert parse_kernel_release("weird") is None
    assert MIN_KERNEL == (5, 3)


# -- a caller's profile -----------------------------------------------------------------------

USER_PROFILE = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
    ],
    "syscalls": [
        {"name": "mkdirat", "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
        {"names": ["mount"], "action": "SCMP_ACT_ERRNO", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["chmod"], "action": "SCMP_ACT_KILL", "includes": {"arches": ["arm64"]}},
        {"names": ["reboot"], "action": "SCMP_ACT_ERRNO",
         "includes": {"caps": ["CAP_SYS_BOOT", "CAP_SYS_TIME"]}},
        {"names": ["uname"], "action": "SCMP_ACT_LOG", "includes": {"minKernel": "6.0"},
         "comment": "new kernels only", "someFutureKey": 1},
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]},
    ],
}  # fmt: skip


def names_of(document: dict[str, Any]) -> list[list[str]]:
    return [rule["names"] for rule in document.get("syscalls", ())]


def test_a_user_profile_resolves_includes_and_excludes() -> None:
    text = json.dumps(USER_PROFILE)
    plain = seccomp_filter(text, DEFAULT_CAPABILITIES, arch="amd64", kernel=(5, 15))
    assert plain == {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [
            {"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["mount"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]},
        ],
    }  # fmt: skip
    admin = seccomp_filter(
        text, [*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN", "CAP_SYS_BOOT"], arch="amd64"
    )
    assert admin is not None and names_of(admin) == [["mkdirat"], ["kill"]]  # one cap: not all
    both = seccomp_filter(text, ["CAP_SYS_BOOT", "CAP_SYS_TIME"], arch="arm64", kernel=(6, 1))
    assert both is not None
    assert both["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert names_of(both) == [["mkdirat"], ["mount"], ["chmod"], ["reboot"], ["uname"], ["kill"]]


def test_an_empty_profile_is_no_filter_and_architectures_are_kept() -> None:
    assert seccomp_filter("{}", DEFAULT_CAPABILITIES, arch="amd64") is None
    kept = seccomp_filter(
        '{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"], '
        '"flags": ["SECCOMP_FILTER_FLAG_LOG"], "syscalls": null}',
        (),
        arch="amd64",
    )
    assert kept == {
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
    }


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ("{not json", "Decoding seccomp profile failed: JSON is malformed"),
        ('{"defaultAction": 1}', "Expected `str`, got `int` - at `$.defaultAction`"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"], '
         '"archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}',
         "both 'architectures' and 'archMap' are specified in the seccomp profile, use either "
         "'architectures' or 'archMap'"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"name": "read", "names": ["write"], '
         '"action": "SCMP_ACT_ALLOW"}]}',
         "both 'name' and 'names' are specified in the seccomp profile, use either 'name' or "
         "'names'"),
        ('{"defaultAction": "SCMP_ACT_NOPE"}', "unknown seccomp action 'SCMP_ACT_NOPE'"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], '
         '"action": "allow"}]}', "unknown seccomp action 'allow'"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], '
         '"action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "=="}]}]}',
         "unknown seccomp operator '=='"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], '
         '"action": "SCMP_ACT_ALLOW", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}',
         "Expected `int` <= 5 - at `$.syscalls[0].args[0].index`"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": -1}',
         "Expected `int` >= 0 - at `$.defaultErrnoRet`"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], '
         '"action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4"}}]}',
         'invalid kernel version: "4", expected "<kernel>.<major>"'),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], '
         '"action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "0.0"}}]}',
         "version cannot be 0.0"),
        ('{"syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}',
         "the seccomp profile has syscalls but no defaultAction"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]}',
         "a seccomp rule names no syscall"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["x86_64"]}',
         "unknown seccomp architecture 'x86_64'"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "flags": ["LOG"]}', "unknown seccomp flag 'LOG'"),
        ("[]", "Expected `object`, got `array`"),
    ],
)  # fmt: skip
def test_a_bad_profile_is_a_400(profile: str, message: str) -> None:
    with pytest.raises(errors.InvalidParameter) as refused:
        load_profile(profile)
    assert refused.value.status == 400
    assert refused.value.message.startswith("Decoding seccomp profile failed: ")
    assert message in refused.value.message


# -- SecurityOpt ------------------------------------------------------------------------------

PROFILE_TEXT = json.dumps(USER_PROFILE, separators=(",", ":"))


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (None, SecurityOptions()),
        ([], SecurityOptions()),
        (["no-new-privileges"], SecurityOptions(no_new_privileges=True)),
        (["no-new-privileges=true"], SecurityOptions(no_new_privileges=True)),
        (["no-new-privileges:true"], SecurityOptions(no_new_privileges=True)),
        (["no-new-privileges=1"], SecurityOptions(no_new_privileges=True)),
        (["no-new-privileges=True"], SecurityOptions(no_new_privileges=True)),
        (["no-new-privileges=false"], SecurityOptions()),
        (["no-new-privileges:f"], SecurityOptions()),
        (["no-new-privileges", "no-new-privileges=false"], SecurityOptions()),
        (["seccomp=unconfined"], SecurityOptions(seccomp="unconfined")),
        (["seccomp:unconfined"], SecurityOptions(seccomp="unconfined")),
        (["seccomp=builtin"], SecurityOptions()),
        (["seccomp="], SecurityOptions()),
        (["seccomp=unconfined", "seccomp=builtin"], SecurityOptions()),
        ([f"seccomp={PROFILE_TEXT}"], SecurityOptions(seccomp="custom",
                                                      seccomp_profile=PROFILE_TEXT)),
        (["apparmor=my-profile"], SecurityOptions(apparmor="my-profile")),
        (["apparmor:unconfined"], SecurityOptions(apparmor="unconfined")),
        (["label=disable"], SecurityOptions(labels=("disable",))),
        (["disable"], SecurityOptions(labels=("disable",))),
        (["label:user:USER", "label=level:s0:c100,c200", "label=type:svirt_apache_t",
          "label=role:ROLE", "label=filetype:x", "label=nested", "label=anything"],
         SecurityOptions(labels=("user:USER", "level:s0:c100,c200", "type:svirt_apache_t",
                                 "role:ROLE", "filetype:x", "nested", "anything"))),
        (["writable-cgroups=false"], SecurityOptions()),
        (["writable-cgroups"], SecurityOptions(not_applied=("writable-cgroups",))),
        (["writable-cgroups=true"], SecurityOptions(not_applied=("writable-cgroups=true",))),
    ],
)  # fmt: skip
def test_security_opt_forms(options: list[str] | None, expected: SecurityOptions) -> None:
    assert parse_security_opt(options) == expected


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("label", 'invalid --security-opt 1: "label"'),
        ("unknown", 'invalid --security-opt 1: "unknown"'),
        ("", 'invalid --security-opt 1: ""'),
        ("no-new-privileges-please", 'invalid --security-opt 1: "no-new-privileges-please"'),
        ("unknown=something", 'invalid --security-opt 2: "unknown=something"'),
        ("no-new-privileges=maybe", 'invalid --security-opt 2: "no-new-privileges=maybe"'),
        ("no-new-privileges:yes", 'invalid --security-opt 2: "no-new-privileges:yes"'),
        ("writable-cgroups=dang", 'invalid --security-opt 2: "writable-cgroups=dang"'),
        ('seccomp:{"a":"b=c"}', 'invalid --security-opt 2: "seccomp:{\\"a\\":\\"b=c\\"}"'),
        ("bad\tone\x01", 'invalid --security-opt 1: "bad\\tone\\x01"'),
        ("seccomp=/etc/profile.json", "Decoding seccomp profile failed: JSON is malformed"),
    ],
)
def test_security_opt_refusals_are_dockerds(option: str, message: str) -> None:
    with pytest.raises(errors.InvalidParameter) as refused:
        parse_security_opt(["no-new-privileges", option])
    assert refused.value.message.startswith(message)


def test_go_quote() -> None:
    assert go_quote('a"b\\c\n') == '"a\\"b\\\\c\\n"'
    assert go_quote("é\u200b") == '"é\\u200b"'


@pytest.mark.parametrize("option", ["writable-cgroups", "writable-cgroups=1", "label"])
def test_create_refuses_what_is_not_applied_or_malformed(option: str) -> None:
    with pytest.raises(errors.InvalidParameter) as refused:
        validate_host_config(parse_host_config({"SecurityOpt": [option]}))
    assert option in refused.value.message


# -- the spec ---------------------------------------------------------------------------------


def spec(security_opt: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
    host = {"SecurityOpt": security_opt, **kwargs.pop("host", {})}
    return build_spec(
        "c" * 64,
        parse_config({"Image": "busybox", "Cmd": ["sh"]}),
        parse_host_config(host),
        rootfs="/r",
        netns="",
        **kwargs,
    )


def test_every_container_gets_the_default_profile() -> None:
    document = spec(arch="amd64", kernel=KERNEL)
    assert document["linux"]["seccomp"] == default_filter()
    on_arm = spec(arch="arm64")["linux"]["seccomp"]
    assert on_arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert allowed(on_arm, "set_tls")


def test_the_filter_follows_the_capabilities() -> None:
    admin = spec(host={"CapAdd": ["SYS_ADMIN"]})["linux"]["seccomp"]
    assert allowed(admin, "mount") and allowed(admin, "unshare")
    dropped = spec(host={"CapDrop": ["ALL"]})["linux"]["seccomp"]
    assert not allowed(dropped, "chroot")


@pytest.mark.parametrize("option", ["seccomp=unconfined", "seccomp:unconfined"])
def test_unconfined_has_no_filter(option: str) -> None:
    assert "seccomp" not in spec([option])["linux"]


def test_a_user_profile_is_the_filter() -> None:
    document = spec([f"seccomp={PROFILE_TEXT}"], arch="amd64", kernel=KERNEL)
    assert document["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ALLOW"
    assert names_of(document["linux"]["seccomp"])[0] == ["mkdirat"]
    assert "seccomp" not in spec(["seccomp={}"])["linux"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (None, False),
        (["no-new-privileges"], True),
        (["no-new-privileges=true"], True),
        (["no-new-privileges:true"], True),
        (["no-new-privileges=1"], True),
        (["no-new-privileges=false"], False),
        (["no-new-privileges:false"], False),
        (["no-new-privileges", "no-new-privileges=false"], False),
        (["seccomp=unconfined"], False),
    ],
)
def test_no_new_privileges_in_every_spelling(options: list[str] | None, expected: bool) -> None:
    assert spec(options)["process"]["noNewPrivileges"] is expected


def test_apparmor_is_applied_only_where_the_host_has_it() -> None:
    assert "apparmorProfile" not in spec(["apparmor=my-profile"])["process"]
    assert "apparmorProfile" not in spec(["apparmor=my-profile"], apparmor=False)["process"]
    hosted = spec(["apparmor=my-profile"], apparmor=True)["process"]
    assert hosted["apparmorProfile"] == "my-profile"
    assert "apparmorProfile" not in spec(apparmor=True)["process"]


def test_labels_are_not_applied_without_selinux() -> None:
    document = spec(["label=type:svirt_apache_t", "label=level:s0:c1"])
    assert "selinuxLabel" not in document["process"]
    assert "mountLabel" not in document["linux"]


# -- through the daemon (fake runtime) --------------------------------------------------------


async def test_inspect_shows_the_apparmor_profile_until_the_first_start(engine: Engine) -> None:
    """dockerd keeps the name at create; a start on a host without AppArmor clears it."""
    daemon = engine.daemon
    body = {"Image": "busybox", "Cmd": ["sleep", "infinity"]}
    options = ["apparmor=my-profile", "no-new-privileges=true", "label=disable"]
    await daemon.container_create("web", body, {"SecurityOpt": options})
    shown = await daemon.container_inspect("web")
    assert shown["AppArmorProfile"] == "my-profile"
    assert shown["HostConfig"]["SecurityOpt"] == options
    await daemon.container_start("web")
    shown = await daemon.container_inspect("web")
    assert shown["AppArmorProfile"] == ""
    assert shown["HostConfig"]["SecurityOpt"] == options
    process = engine.runtime.processes[shown["Id"]]
    assert process.spec["process"]["noNewPrivileges"] is True  # type: ignore[index]
    assert "seccomp" in process.spec["linux"]  # type: ignore[operator]
    await daemon.container_create("plain", body, {})
    assert (await daemon.container_inspect("plain"))["AppArmorProfile"] == ""


async def test_a_bad_profile_is_refused_at_create_and_nothing_is_made(engine: Engine) -> None:
    body = {"Image": "busybox", "Cmd": ["true"]}
    with pytest.raises(errors.InvalidParameter, match="Decoding seccomp profile failed"):
        await engine.daemon.container_create("web", body, {"SecurityOpt": ["seccomp={"]})
    assert await engine.daemon.containers_list(all=True) == []
    assert engine.mounter.layers == {}


def test_an_architecture_the_kernel_does_not_run_is_left_out() -> None:
    """x32 is off in most x86_64 kernels: its filter would cost runc milliseconds at every
    start and guard nothing (its calls are refused as from an unknown architecture)."""
    everything = seccomp_filter(None, DEFAULT_CAPABILITIES, arch="amd64")
    assert everything is not None
    assert everything["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    without = seccomp_filter(
        None, DEFAULT_CAPABILITIES, arch="amd64", absent_arches={"SCMP_ARCH_X32"}
    )
    assert without is not None
    assert without["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    assert without["syscalls"] == everything["syscalls"], "the rules are the same"


@pytest.mark.anyio
async def test_docker_info_says_every_container_is_filtered(engine: Engine) -> None:
    """It said ``"SecurityOptions": []``: clients concluded no seccomp at all."""
    assert "name=seccomp,profile=builtin" in engine.daemon.system_info()["SecurityOptions"]


def test_a_profile_too_large_is_refused_before_it_is_decoded() -> None:
    """The caches hold profiles by their text: a bound on each keeps them bounded."""
    huge = json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "comment": "x" * (2 << 20)})
    with pytest.raises(errors.InvalidParameter, match="seccomp profile too large"):
        load_profile(huge)
