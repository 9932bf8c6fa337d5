"""Seccomp: the filter every container gets, and the profiles a caller may give instead. Pure.

A profile is dockerd's format (what ``docker run --security-opt seccomp=<file>`` sends): a default
action, architectures, and rules whose ``includes`` / ``excludes`` filters name capabilities (the
container's bounding set), architectures and a minimum kernel. The default is
:mod:`asyncstart.seccomp_policy`'s data written in that format, so one resolver serves both:
:func:`seccomp_filter` gives the OCI ``linux.seccomp`` object, cached per (profile,
capabilities, architecture, kernel) so a start does not pay for it twice.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Annotated, Any, Final

import msgspec

from . import errors
from .seccomp_policy import (
    ARCH_FAMILIES,
    ARCH_SYSCALLS,
    ARG_RULES,
    CAPABILITY_SYSCALLS,
    DEFAULT_ERRNO,
    ENOSYS,
    ENOSYS_UNLESS,
    FROM_KERNEL,
    SYSCALL_GROUPS,
)

__all__ = [
    "CACHED",
    "MAX_PROFILE",
    "MIN_KERNEL",
    "Profile",
    "load_profile",
    "parse_kernel_release",
    "seccomp_filter",
]

#: The oldest kernel asyncstart runs on (the exit monitor needs ``pidfd_open``, Linux 5.3): what
#: ``minKernel`` filters are compared with when the kernel's release does not say.
MIN_KERNEL: Final = (5, 3)

#: The machine (Go's GOARCH) as libseccomp names it, in ``includes``/``excludes`` ``arches``.
_NATIVE: Final = {
    "386": "x86", "loong64": "loongarch64", "mips64le": "mipsel64", "mips64p32": "mips64n32",
    "mips64p32le": "mips3l64n32", "mipsle": "mipsel",
}  # fmt: skip
#: Those libseccomp names as OCI architectures; an ``archMap`` entry for it is the machine's.
_SCMP_ARCH: Final = {
    "x86": "SCMP_ARCH_X86", "amd64": "SCMP_ARCH_X86_64", "arm": "SCMP_ARCH_ARM",
    "arm64": "SCMP_ARCH_AARCH64", "loongarch64": "SCMP_ARCH_LOONGARCH64",
    "mips64": "SCMP_ARCH_MIPS64", "mips64n32": "SCMP_ARCH_MIPS64N32",
    "mipsel64": "SCMP_ARCH_MIPSEL64", "mips3l64n32": "SCMP_ARCH_MIPSEL64N32",
    "mipsel": "SCMP_ARCH_MIPSEL", "ppc": "SCMP_ARCH_PPC", "ppc64": "SCMP_ARCH_PPC64",
    "ppc64le": "SCMP_ARCH_PPC64LE", "riscv64": "SCMP_ARCH_RISCV64", "s390": "SCMP_ARCH_S390",
    "s390x": "SCMP_ARCH_S390X",
}  # fmt: skip

# --- dockerd's profile format ------------------------------------------------------------------

_U64 = Annotated[int, msgspec.Meta(ge=0)]  # and below 2**64: checked (msgspec bounds int64)
_U32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]


class _Format(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """Base: the profile's camelCase keys; unknown keys ignored, as Go's decoder does."""


class Arg(_Format, frozen=True):
    index: Annotated[int, msgspec.Meta(ge=0, le=5)]
    value: _U64 = 0
    value_two: _U64 = 0
    op: str = ""


class Filter(_Format, frozen=True):
    caps: list[str] | None = None
    arches: list[str] | None = None
    min_kernel: str | None = None


class Rule(_Format, frozen=True):
    names: list[str] | None = None
    #: The single-name form of older profiles.
    name: str = ""
    action: str = ""
    errno_ret: _U32 | None = None
    args: list[Arg] | None = None
    comment: str = ""
    includes: Filter | None = None
    excludes: Filter | None = None


class ArchMapEntry(_Format, frozen=True):
    architecture: str = ""
    sub_architectures: list[str] | None = None


class Profile(_Format, frozen=True):
    """A seccomp profile as ``docker run --security-opt seccomp=<file>`` sends it."""

    default_action: str = ""
    default_errno_ret: _U32 | None = None
    architectures: list[str] | None = None
    arch_map: list[ArchMapEntry] | None = None
    flags: list[str] | None = None
    listener_path: str = ""
    listener_metadata: str = ""
    syscalls: list[Rule] | None = None


#: What the OCI spec (and runc) knows: anything else is refused at create.
_ACTIONS: Final = frozenset(
    "SCMP_ACT_" + a
    for a in ("KILL", "KILL_PROCESS", "KILL_THREAD", "TRAP", "ERRNO", "TRACE", "ALLOW", "LOG",
              "NOTIFY")
)  # fmt: skip
_OPS: Final = frozenset("SCMP_CMP_" + o for o in ("NE", "LT", "LE", "EQ", "GE", "GT", "MASKED_EQ"))
_FLAGS: Final = frozenset(
    "SECCOMP_FILTER_FLAG_" + f for f in ("TSYNC", "LOG", "SPEC_ALLOW", "WAIT_KILLABLE_RECV")
)
_ARCHES: Final = frozenset(_SCMP_ARCH.values()) | frozenset(
    "SCMP_ARCH_" + a for a in ("X32", "MIPS", "PARISC", "PARISC64", "M68K", "SH", "SHEB")
)


def _default_profile() -> Profile:
    """The policy above in the profile format, so one resolver serves it and a caller's."""
    allow = "SCMP_ACT_ALLOW"
    everyone = sorted({name for group in SYSCALL_GROUPS.values() for name in group})
    rules = [Rule(names=everyone, action=allow)]
    rules += [
        Rule(names=list(names), action=allow, includes=Filter(min_kernel=f"{major}.{minor}"))
        for (major, minor), names in FROM_KERNEL
    ]
    for rule in ARG_RULES:
        excludes = Filter(caps=[rule.unless] if rule.unless else None,
                          arches=list(rule.not_arches) or None)  # fmt: skip
        rules.append(
            Rule(
                names=[rule.syscall],
                action=allow,
                args=[
                    Arg(index=rule.index, value=rule.value, value_two=rule.value_two, op=rule.op)
                ],
                comment=rule.why,
                includes=Filter(arches=list(rule.arches)) if rule.arches else None,
                excludes=excludes if rule.unless or rule.not_arches else None,
            )
        )
    rules += [
        Rule(names=[name], action="SCMP_ACT_ERRNO", errno_ret=ENOSYS,
             excludes=Filter(caps=[capability]))
        for name, capability in ENOSYS_UNLESS
    ]  # fmt: skip
    rules += [Rule(names=list(names), action=allow, includes=Filter(arches=list(arches)))
              for arches, names in ARCH_SYSCALLS]  # fmt: skip
    rules += [Rule(names=list(names), action=allow, includes=Filter(caps=[capability]))
              for capability, names in CAPABILITY_SYSCALLS.items()]  # fmt: skip
    arch_map = [ArchMapEntry(architecture=arch, sub_architectures=list(subs))
                for arch, subs in ARCH_FAMILIES.items()]  # fmt: skip
    return Profile(default_action="SCMP_ACT_ERRNO", default_errno_ret=DEFAULT_ERRNO,
                   arch_map=arch_map, syscalls=rules)  # fmt: skip


_DEFAULT: Final = _default_profile()


# --- Decoding and checking a caller's profile ------------------------------------------------


def _kernel_version(text: str) -> tuple[int, int]:
    """A filter's ``minKernel`` ("<kernel>.<major>"), with dockerd's error for a bad one."""
    quoted = msgspec.json.encode(text).decode()
    parts = text.split(".", 2)
    if len(parts) != 2 or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise ValueError(f'invalid kernel version: {quoted}, expected "<kernel>.<major>"')
    version = (int(parts[0]), int(parts[1]))
    if version == (0, 0):
        raise ValueError(
            f'invalid kernel version: {quoted}, expected "<kernel>.<major>": version cannot be 0.0'
        )
    return version


def _check(profile: Profile) -> None:
    """What dockerd checks when it loads a profile, and what runc would refuse at start."""
    if profile.architectures and profile.arch_map:
        raise ValueError(
            "both 'architectures' and 'archMap' are specified in the seccomp profile, "
            "use either 'architectures' or 'archMap'"
        )
    if profile.syscalls and not profile.default_action:
        raise ValueError("the seccomp profile has syscalls but no defaultAction")
    if profile.default_action and profile.default_action not in _ACTIONS:
        raise ValueError(f"unknown seccomp action {profile.default_action!r}")
    arches = [*(profile.architectures or ())]
    for entry in profile.arch_map or ():
        arches += [entry.architecture, *(entry.sub_architectures or ())]
    for arch in arches:
        if arch not in _ARCHES:
            raise ValueError(f"unknown seccomp architecture {arch!r}")
    for flag in profile.flags or ():
        if flag not in _FLAGS:
            raise ValueError(f"unknown seccomp flag {flag!r}")
    for rule in profile.syscalls or ():
        if rule.name and rule.names:
            raise ValueError(
                "both 'name' and 'names' are specified in the seccomp profile, "
                "use either 'name' or 'names'"
            )
        if not rule.name and not rule.names:
            raise ValueError("a seccomp rule names no syscall")
        if rule.action not in _ACTIONS:
            raise ValueError(f"unknown seccomp action {rule.action!r}")
        for arg in rule.args or ():
            if max(arg.value, arg.value_two) >= 2**64:
                raise ValueError(f"seccomp argument value out of range: {arg}")
            if arg.op not in _OPS:
                raise ValueError(f"unknown seccomp operator {arg.op!r}")
        for condition in (rule.includes, rule.excludes):
            if condition is not None and condition.min_kernel:
                _kernel_version(condition.min_kernel)


#: A caller's profile is at most this long (dockerd's own default is about 20 KB): what the
#: caches below may hold stays bounded whatever clients send.
MAX_PROFILE = 1024 * 1024
#: Distinct profiles (and option lists naming them) kept resolved.
CACHED = 16


@functools.lru_cache(maxsize=CACHED)
def load_profile(text: str) -> Profile:
    """A caller's profile (its JSON), checked: a 400 with dockerd's wording where it has one."""
    if len(text) > MAX_PROFILE:
        raise errors.InvalidParameter(
            f"seccomp profile too large: {len(text)} bytes (at most {MAX_PROFILE})"
        )
    try:
        profile = msgspec.json.decode(text, type=Profile)
        _check(profile)
    except (msgspec.DecodeError, ValueError) as exc:
        raise errors.InvalidParameter(f"Decoding seccomp profile failed: {exc}") from None
    return profile


def parse_kernel_release(release: str) -> tuple[int, int] | None:
    """``uname -r`` ("6.1.0-18-amd64") as (kernel, major); None if it does not say."""
    parts = release.split(".", 2)
    try:
        return int(parts[0]), int("".join(c for c in parts[1][:3] if c.isdigit()) or "x")
    except (IndexError, ValueError):
        return None


# --- Resolution --------------------------------------------------------------------------------


def _kernel_at_least(minimum: str, kernel: tuple[int, int]) -> bool:
    """Whether the kernel is ``minimum`` ("4.8") or newer (its minor revision ignored)."""
    return kernel >= _kernel_version(minimum)


def _applies(rule: Rule, caps: frozenset[str], native: str, kernel: tuple[int, int]) -> bool:
    """dockerd's reading: an exclude drops the rule if any of its conditions matches (its
    architecture, any one of its caps held, the kernel at least); an include keeps it only if
    all match (its architecture, every one of its caps held, the kernel at least)."""
    ex, inc = rule.excludes, rule.includes
    if ex is not None and (
        (ex.arches and native in ex.arches)
        or any(cap in caps for cap in ex.caps or ())
        or (ex.min_kernel and _kernel_at_least(ex.min_kernel, kernel))
    ):
        return False
    return inc is None or (
        (not inc.arches or native in inc.arches)
        and all(cap in caps for cap in inc.caps or ())
        and (not inc.min_kernel or _kernel_at_least(inc.min_kernel, kernel))
    )


def _resolve(
    profile: Profile,
    caps: frozenset[str],
    arch: str,
    kernel: tuple[int, int],
    absent: frozenset[str] = frozenset(),
) -> dict[str, Any] | None:
    if not profile.default_action and not profile.syscalls:
        return None  # dockerd: a profile that says nothing is no filter
    native = _NATIVE.get(arch, arch)
    out: dict[str, Any] = {"defaultAction": profile.default_action}
    if profile.default_errno_ret is not None:
        out["defaultErrnoRet"] = profile.default_errno_ret
    arches = list(profile.architectures or ())
    for entry in profile.arch_map or ():
        if entry.architecture == _SCMP_ARCH.get(native):
            arches += [entry.architecture, *(entry.sub_architectures or ())]
            break
    # An ABI the kernel does not offer (x32 on most x86_64 kernels) needs no filter of its
    # own: its calls are refused as from an unknown architecture. (Each architecture costs
    # runc several milliseconds of filter compilation at every start.)
    arches = [a for a in arches if a not in absent]
    if arches:
        out["architectures"] = arches
    if profile.flags:
        out["flags"] = list(profile.flags)
    if profile.listener_path:
        out["listenerPath"] = profile.listener_path
    if profile.listener_metadata:
        out["listenerMetadata"] = profile.listener_metadata
    syscalls = []
    for rule in profile.syscalls or ():
        if not _applies(rule, caps, native, kernel):
            continue
        oci: dict[str, Any] = {"names": [rule.name] if rule.name else list(rule.names or ()),
                               "action": rule.action}  # fmt: skip
        if rule.errno_ret is not None:
            oci["errnoRet"] = rule.errno_ret
        if rule.args:
            oci["args"] = [
                {"index": a.index, "value": a.value, "op": a.op}
                | ({"valueTwo": a.value_two} if a.value_two else {})
                for a in rule.args
            ]
        syscalls.append(oci)
    if syscalls:
        out["syscalls"] = syscalls
    return out


@functools.lru_cache(maxsize=4 * CACHED)
def _resolved(
    text: str | None,
    caps: frozenset[str],
    arch: str,
    kernel: tuple[int, int],
    absent: frozenset[str],
) -> dict[str, Any] | None:
    """Resolved once per key; never handed out (see :func:`_copy`)."""
    profile = _DEFAULT if text is None else load_profile(text)
    return _resolve(profile, caps, arch, kernel, absent)


def _copy(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of a resolved filter that shares nothing mutable with it (a spec may be edited
    by its caller): a few dicts and lists, far cheaper than a deep copy or a decode."""
    copied = dict(document)
    for key in ("architectures", "flags"):
        if key in copied:
            copied[key] = list(copied[key])
    if "syscalls" in copied:
        copied["syscalls"] = [
            {**rule, "names": list(rule["names"])}
            | ({"args": [dict(arg) for arg in rule["args"]]} if "args" in rule else {})
            for rule in copied["syscalls"]
        ]
    return copied


def seccomp_filter(
    profile: str | None,
    capabilities: Iterable[str],
    *,
    arch: str,
    kernel: tuple[int, int] = MIN_KERNEL,
    absent_arches: Iterable[str] = (),
    shared: bool = False,
) -> dict[str, Any] | None:
    """The OCI ``linux.seccomp`` of a container: ``profile`` is a caller's profile (JSON) or
    None for the default; ``capabilities`` its bounding set; ``arch`` Go's GOARCH of the
    machine; ``kernel`` (kernel, major) for ``minKernel`` filters; ``absent_arches`` the
    architectures (``SCMP_ARCH_*``) the kernel does not run. None: no filter.

    ``shared``: the cached filter itself, not a copy, for a caller that never edits it (the
    spec builder: every start's spec refers to the one filter)."""
    resolved = _resolved(profile, frozenset(capabilities), arch, kernel, frozenset(absent_arches))
    if resolved is None or shared:
        return resolved
    return _copy(resolved)
