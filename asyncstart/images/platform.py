"""Platform specifiers (``linux/amd64``, ``arm64``, ``linux/arm/v7``) as dockerd reads them.

dockerd parses the ``platform`` argument of a pull and of a create with containerd's
``platforms.Parse`` before it does anything else, and answers 400 with that parser's words;
a create whose image was made for another platform is 404. This is that grammar and those
checks, pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .. import errors
from ..hostinfo import go_arch

__all__ = ["Platform", "check_image_platform", "parse_platform"]

_SPECIFIER = re.compile(r"[A-Za-z0-9_.-]+")
_OS = re.compile(r"([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.%-]*)((?:\+[A-Za-z0-9_.%-]+)*)\))?")
_OS_PATTERN = r"^([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.%-]*)((?:\+[A-Za-z0-9_.%-]+)*)\))?$"
_SPECIFIER_PATTERN = r"^[A-Za-z0-9_.-]+$"
_INVALID = "invalid argument"

_KNOWN_OS = frozenset({
    "aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js",
    "linux", "nacl", "netbsd", "openbsd", "plan9", "solaris", "windows", "zos",
})  # fmt: skip
_KNOWN_ARCH = frozenset({
    "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le",
    "loong64", "mips", "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc",
    "riscv", "riscv64", "s390", "s390x", "sparc", "sparc64", "wasm",
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """containerd's ``normalizeArch``: the spellings of one architecture made one."""
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        if variant in ("8", "v8", "v8.0"):
            return "arm64", ""
        if variant in ("9", "9.0", "v9.0"):
            return "arm64", "v9"
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
    return arch, variant


def parse_platform(specifier: str) -> Platform:
    """containerd's ``platforms.Parse``, with its messages (dockerd's 400)."""

    def invalid(message: str) -> errors.InvalidParameter:
        return errors.InvalidParameter(f"{message}: {_INVALID}")

    quoted = _go_quote(specifier)
    if "*" in specifier:
        raise invalid(f"{quoted}: wildcards not yet supported")
    parts = specifier.split("/", 3)
    match = _OS.fullmatch(parts[0])
    if match is None:
        raise invalid(
            f"{_go_quote(parts[0])} is an invalid OS component of {quoted}: OSAndVersion "
            f"specifier component must match {_go_quote(_OS_PATTERN)}"
        )
    os_name = "linux" if match[1].lower() == "" else match[1].lower()
    if os_name == "macos":
        os_name = "darwin"
    for part in parts[1:]:
        if not _SPECIFIER.fullmatch(part):
            raise invalid(
                f"{_go_quote(part)} is an invalid component of {quoted}: platform specifier "
                f"component must match {_go_quote(_SPECIFIER_PATTERN)}"
            )
    if len(parts) == 1:
        if os_name in _KNOWN_OS:
            return Platform(os_name, go_arch())
        arch, variant = _normalize_arch(parts[0], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        if arch in _KNOWN_ARCH:
            return Platform("linux", arch, variant)
        raise invalid(f"{quoted}: unknown operating system or architecture")
    if len(parts) == 2:
        arch, variant = _normalize_arch(parts[1], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        return Platform(os_name, arch, variant)
    if len(parts) == 3:
        arch, variant = _normalize_arch(parts[1], parts[2])
        if arch == "arm64" and variant == "":
            variant = "v8"
        return Platform(os_name, arch, variant)
    raise invalid(f"{quoted}: cannot parse platform specifier")


def check_image_platform(reference: str, image: dict[str, Any], wanted: Platform) -> None:
    """A create for ``wanted`` of an image made for another platform: dockerd's 404. A missing
    variant on either side matches (dockerd's fallback matcher)."""
    os_name = image.get("Os") or image.get("os") or "linux"
    arch = image.get("Architecture") or image.get("architecture") or go_arch()
    variant = image.get("Variant") or image.get("variant") or ""
    arch, variant = _normalize_arch(arch, variant)
    same_variant = not (variant and wanted.variant) or variant == wanted.variant
    if os_name == wanted.os and arch == wanted.architecture and same_variant:
        return
    actual = Platform(os_name, arch, variant)
    raise errors.NotFound(
        f"image with reference {reference} was found but its platform ({actual}) does not "
        f"match the specified platform ({wanted})"
    )


def _go_quote(text: str) -> str:
    """Go's ``%q`` for the printable ASCII that specifiers are made of."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else repr(c)[1:-1] for c in escaped) + '"'
