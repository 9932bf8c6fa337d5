"""The engine's keeping of crun's compiled seccomp programs, on its own: when a program is
handed back, when it is not, and what is learnt."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from asyncstart.runtime import seccomp_cache
from asyncstart.runtime.seccomp_cache import ANNOTATION, FilterCache

PROGRAM = bytes(range(16))  # (two 8-byte instructions)


def _spec(profile: str = "a", **annotations: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"linux": {"seccomp": {"defaultAction": profile}}}
    if annotations:
        spec["annotations"] = annotations
    return spec


@pytest.fixture
def crun(tmp_path: Path) -> str:
    binary = tmp_path / "bin" / "crun"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return str(binary)


def _learnt(cache: FilterCache, binary: str, spec: dict[str, Any], state: Path) -> None:
    written, key = cache.prepare(binary, spec)
    assert written is spec and key is not None, "nothing kept yet: crun compiles"
    state.mkdir(exist_ok=True)
    (state / "seccomp.bpf").write_bytes(PROGRAM)
    cache.learn(key, state)


def test_the_program_crun_compiled_is_handed_back_for_the_same_profile(
    crun: str, tmp_path: Path
) -> None:
    cache = FilterCache()
    _learnt(cache, crun, _spec(), tmp_path / "first")
    spec = _spec(**{"com.example": "kept"})
    written, key = cache.prepare(crun, spec)
    assert key is None, "nothing more to learn"
    assert written["annotations"] == {
        "com.example": "kept",
        ANNOTATION: base64.b64encode(PROGRAM).decode(),
    }
    assert ANNOTATION not in spec["annotations"], "the caller's spec is not edited"
    other, key = cache.prepare(crun, _spec("b"))
    assert ANNOTATION not in (other.get("annotations") or {}) and key is not None


@pytest.mark.parametrize(
    ("binary", "spec", "restoring"),
    [
        ("runc", _spec(), False),  # runc has no such annotation
        ("crun", {"linux": {}}, False),  # no profile (unconfined, privileged)
        ("crun", _spec(**{"run.oci.seccomp_fail_unknown_syscall": "1"}), False),
        ("crun", _spec(**{ANNOTATION: "the caller's own"}), False),
        ("crun", _spec(), True),  # a restore
        ("crun", {"linux": {"seccomp": {"defaultAction": "a", "listenerPath": "/l"}}}, False),
    ],
)
def test_nothing_is_kept_or_handed_where_it_must_not_be(
    crun: str, tmp_path: Path, binary: str, spec: dict[str, Any], restoring: bool
) -> None:
    binary = crun if binary == "crun" else str(tmp_path / "bin" / binary)
    cache = FilterCache()
    _learnt(cache, crun, _spec(), tmp_path / "first")  # the plain profile's program is kept
    written, key = cache.prepare(binary, spec, restoring=restoring)
    assert (written, key) == (spec, None)


@pytest.mark.parametrize("replaced", ["crun", "libseccomp"])
def test_a_crun_or_libseccomp_replaced_on_disk_compiles_anew(
    crun: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, replaced: str
) -> None:
    library = tmp_path / "libseccomp.so.2"
    library.write_bytes(b"")
    monkeypatch.setattr(seccomp_cache, "_libseccomp", lambda: str(library))
    cache = FilterCache()
    _learnt(cache, crun, _spec(), tmp_path / "first")
    assert cache.prepare(crun, _spec())[1] is None, "kept"
    path = crun if replaced == "crun" else library
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    written, key = cache.prepare(crun, _spec())
    assert ANNOTATION not in (written.get("annotations") or {}) and key is not None


def test_only_a_whole_program_is_learnt_and_the_oldest_goes(crun: str, tmp_path: Path) -> None:
    cache = FilterCache(limit=2)
    state = tmp_path / "state"
    state.mkdir()
    _, key = cache.prepare(crun, _spec("a"))
    cache.learn(key, state)  # crun wrote nothing
    (state / "seccomp.bpf").write_bytes(PROGRAM[:5])
    cache.learn(key, state)  # not a whole number of instructions
    assert cache.prepare(crun, _spec("a"))[1] is not None, "nothing was learnt"
    for profile in "abc":
        _learnt(cache, crun, _spec(profile), state)
    assert cache.prepare(crun, _spec("a"))[1] is not None, "the oldest went"
    assert cache.prepare(crun, _spec("c"))[1] is None
