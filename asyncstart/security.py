"""``HostConfig.SecurityOpt``, parsed once into :class:`SecurityOptions`. Pure.

dockerd's ``parseSecurityOpt`` (daemon/daemon_unix.go) is the grammar: ``no-new-privileges``,
``writable-cgroups`` and ``disable`` alone, else ``key=value`` (``key:value``, deprecated, when
there is no ``=``) with the keys ``label``, ``apparmor``, ``seccomp``, ``no-new-privileges`` and
``writable-cgroups``; its errors are its own ("invalid --security-opt 1/2: ..."). What each
option then does follows dockerd on a host like ours:

- ``seccomp``: ``unconfined`` is no filter; ``builtin`` (or empty) the default profile; anything
  else is the profile's JSON (the docker CLI reads ``--security-opt seccomp=<file>`` and sends its
  content), decoded and checked here, at create, rather than failing the start.
- ``apparmor``: kept as the container's ``AppArmorProfile``; applied only where the host has
  AppArmor (dockerd shows the name until the first start, which clears it on a host without).
- ``label``: SELinux options. Without SELinux dockerd's ``label.InitLabels`` accepts any and
  gives no labels, so they are kept and nothing is applied.
- ``writable-cgroups``: a writable ``/sys/fs/cgroup`` is not applied by this engine: asking for
  it is refused at create (``config.not_applied``), never ignored.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import errors
from .seccomp import CACHED, MIN_KERNEL, load_profile, seccomp_filter

__all__ = ["SecurityOptions", "parse_security_opt"]

#: Go's ``strconv.ParseBool``.
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")
_GO_ESCAPES = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t",
               "\v": r"\v", "\\": r"\\", '"': r"\""}  # fmt: skip


def go_quote(text: str) -> str:
    """Go's ``%q`` of a string (``strconv.Quote``), as dockerd's messages print options."""
    out = []
    for char in text:
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


@dataclass(frozen=True, slots=True)
class SecurityOptions:
    """What a container's ``SecurityOpt`` asks for."""

    no_new_privileges: bool = False
    #: "default" (dockerd's builtin profile), "unconfined" or "custom" (:attr:`seccomp_profile`).
    seccomp: str = "default"
    #: The caller's profile (JSON), checked, when :attr:`seccomp` is "custom".
    seccomp_profile: str = ""
    #: The AppArmor profile asked for ("" none).
    apparmor: str = ""
    #: SELinux label options, as given (no SELinux here: nothing is applied).
    labels: tuple[str, ...] = ()
    #: Options asking for what this engine does not apply (refused at create).
    not_applied: tuple[str, ...] = ()

    def seccomp_filter(
        self,
        capabilities: Iterable[str],
        *,
        arch: str,
        kernel: tuple[int, int] | None = None,
        absent_arches: Iterable[str] = (),
        shared: bool = False,
    ) -> dict[str, Any] | None:
        """The OCI ``linux.seccomp`` for a container with these capabilities (its bounding
        set) on this machine (Go's GOARCH; the kernel's (version, major), the oldest supported
        if unknown); None if unconfined (or the caller's profile says nothing). ``shared``:
        the cached filter itself, never to be edited."""
        if self.seccomp == "unconfined":
            return None
        profile = self.seccomp_profile if self.seccomp == "custom" else None
        return seccomp_filter(
            profile, capabilities, arch=arch, kernel=kernel or MIN_KERNEL,
            absent_arches=absent_arches, shared=shared,
        )  # fmt: skip

    def spec_process(self, *, apparmor_host: bool) -> dict[str, Any]:
        """The spec's ``process`` fields these options set: ``noNewPrivileges`` and, on a host
        with AppArmor, the profile asked for."""
        fields: dict[str, Any] = {"noNewPrivileges": self.no_new_privileges}
        if apparmor_host and self.apparmor:
            fields["apparmorProfile"] = self.apparmor
        return fields


def _parse_bool(value: str, option: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise errors.InvalidParameter(f"invalid --security-opt 2: {go_quote(option)}")


@functools.lru_cache(maxsize=CACHED)
def _parse(options: tuple[str, ...]) -> SecurityOptions:
    no_new_privileges = False
    seccomp, profile, apparmor = "default", "", ""
    labels: list[str] = []
    not_applied: list[str] = []
    for option in options:
        if option == "no-new-privileges":
            no_new_privileges = True
            continue
        if option == "writable-cgroups":
            not_applied.append(option)
            continue
        if option == "disable":
            labels.append("disable")
            continue
        separator = "=" if "=" in option else ":"
        key, found, value = option.partition(separator)
        if not found:
            raise errors.InvalidParameter(f"invalid --security-opt 1: {go_quote(option)}")
        if key == "label":
            labels.append(value)
        elif key == "apparmor":
            apparmor = value
        elif key == "seccomp":
            if value == "unconfined":
                seccomp, profile = "unconfined", ""
            elif value in ("", "builtin"):
                seccomp, profile = "default", ""
            else:
                load_profile(value)  # a bad profile is a 400 now, not a failed start
                seccomp, profile = "custom", value
        elif key == "no-new-privileges":
            no_new_privileges = _parse_bool(value, option)
        elif key == "writable-cgroups":
            if _parse_bool(value, option):
                not_applied.append(option)
        else:
            raise errors.InvalidParameter(f"invalid --security-opt 2: {go_quote(option)}")
    return SecurityOptions(
        no_new_privileges=no_new_privileges,
        seccomp=seccomp,
        seccomp_profile=profile,
        apparmor=apparmor,
        labels=tuple(labels),
        not_applied=tuple(not_applied),
    )


def parse_security_opt(options: Sequence[str] | None) -> SecurityOptions:
    """``SecurityOpt`` parsed (cached: create checks it, every start reads it), or dockerd's
    400. The last ``seccomp``, ``apparmor`` or ``no-new-privileges`` given wins, as in dockerd."""
    return _parse(tuple(options or ()))
