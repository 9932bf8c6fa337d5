"""The README's embedding examples run as written, on the fake runtime, on asyncio and on trio.

Each ```python block under "The library" and "The async client" is taken from README.md and run
in a fresh interpreter (the library's block is a whole program: only its roots and backend are
swapped; the others are fragments, run inside a daemon that has what they expect). What they
print is checked, so an example that no longer works — or no longer does what it says — fails
here rather than in a reader's hands.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BACKENDS = ["asyncio", "trio"]


def python_blocks(heading: str) -> list[str]:
    """The ```python blocks between the heading (a whole line, e.g. ``## The library``) and
    the next heading of any level."""
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks: list[str] = []
    body: list[str] | None = None
    language = ""
    for line in lines[lines.index(heading) + 1 :]:
        if line.startswith("```"):
            if body is None:
                body, language = [], line[3:].strip()
            else:
                if language == "python":
                    blocks.append("\n".join(body) + "\n")
                body = None
            continue
        if body is not None:
            body.append(line)
        elif line.startswith("#"):
            break
    return blocks


def swap(code: str, replacements: dict[str, str]) -> str:
    """``code`` with each literal replaced; each must be there (else the README changed)."""
    for old, new in replacements.items():
        assert old in code, f"the README example no longer has {old!r}"
        code = code.replace(old, new)
    return code


def run(program: str) -> list[str]:
    """Run ``program`` in a fresh interpreter; the lines it printed."""
    done = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", program],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, f"the example failed:\n{done.stderr}\n--- program:\n{program}"
    return done.stdout.splitlines()


def in_order(wanted: list[str], got: list[str]) -> bool:
    """``wanted`` appear in ``got`` in this order (others may come between)."""
    rest = iter(got)
    return all(item in rest for item in wanted)


def test_the_examples_are_found() -> None:
    assert len(python_blocks("## The library")) == 2
    assert len(python_blocks("### The async client")) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_library_example(backend: str, tmp_path: Path) -> None:
    """The whole program, with its roots under ``tmp_path`` and the backend chosen."""
    block = python_blocks("## The library")[0]
    program = swap(
        block,
        {
            '"/var/lib/asyncstart"': repr(str(tmp_path / "data")),
            '"/run/asyncstart"': repr(str(tmp_path / "exec")),
            "anyio.run(main)": f"anyio.run(main, backend={backend!r})",
        },
    )
    lines = run(program)
    assert re.fullmatch(r"running \d+", lines[0]), lines
    assert lines[1] == "{'StatusCode': 143}", lines  # stopped with TERM
    assert in_order(["create", "start", "kill", "die", "stop", "destroy"], lines[2:]), lines
    assert lines[-1] == "destroy"


_OUTPUT_AND_INPUT = """
import anyio
import asyncstart


async def main() -> None:
    runtime = asyncstart.FakeRuntime()
    config = asyncstart.DaemonConfig(data_root=@DATA@, exec_root=@EXEC@, runtime="fake")
    async with asyncstart.open_daemon(config, runtime=runtime) as daemon:
        # "web": a cat that ran once and wrote a line (now in its log), stopped since.
        cid = await daemon.container_create(
            name="web",
            config={"Image": "busybox", "Cmd": ["cat"], "OpenStdin": True, "StdinOnce": True},
        )
        await daemon.container_start("web")
        runtime.output(cid, "stdout", b"earlier\\n")
        await daemon.container_close_stdin("web")
        await daemon.container_wait("web")

        async def start_once_attached(*, task_status=anyio.TASK_STATUS_IGNORED) -> None:
            async with daemon.subscribe_events() as events:
                task_status.started()
                async for event in events:
                    if event["Action"] == "attach":
                        break
            await daemon.container_start("web")

        async with anyio.create_task_group() as tg:
            await tg.start(start_once_attached)
            with anyio.fail_after(30):
@BLOCK@
        print("done")


anyio.run(main, backend=@BACKEND@)
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_library_output_and_input_example(backend: str, tmp_path: Path) -> None:
    """The logs-and-attach fragment, on a ``cat`` that ran before (its log) and that the
    attach's ``hello`` reaches once it starts again."""
    block = python_blocks("## The library")[1]
    program = swap(
        _OUTPUT_AND_INPUT,
        {
            "@DATA@": repr(str(tmp_path / "data")),
            "@EXEC@": repr(str(tmp_path / "exec")),
            "@BACKEND@": repr(backend),
            "@BLOCK@": textwrap.indent(block, " " * 16),
        },
    )
    lines = run(program)
    assert len(lines) == 3, lines
    assert re.fullmatch(r"stdout b'\d{4}-\d\d-\d\dT[\d:.]+Z earlier\\n'", lines[0]), lines
    assert lines[1:] == ["stdout b'hello\\n'", "done"]


_CLIENT = """
import contextlib

import anyio
import asyncstart


async def main() -> None:
    config = asyncstart.DaemonConfig(data_root=@DATA@, exec_root=@EXEC@, runtime="fake")
    async with (
        asyncstart.open_daemon(config) as daemon,
        asyncstart.serve_api(daemon, [@HOST@]),
    ):
        with anyio.fail_after(30):
@BLOCK@
        print("done")


anyio.run(main, backend=@BACKEND@)
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_async_client_example(backend: str, tmp_path: Path, sock: Path) -> None:
    """The client's fragment against a daemon served on a socket of its own."""
    block = python_blocks("### The async client")[0]
    code = swap(block, {'"unix:///run/asyncstart.sock"': repr(f"unix://{sock}")})
    program = swap(
        _CLIENT,
        {
            "@DATA@": repr(str(tmp_path / "data")),
            "@EXEC@": repr(str(tmp_path / "exec")),
            "@HOST@": repr(f"unix://{sock}"),
            "@BACKEND@": repr(backend),
            "@BLOCK@": textwrap.indent(code, " " * 12),
        },
    )
    lines = run(program)
    assert lines[0] == "{'StatusCode': 0}", lines  # its sleep ended
    assert in_order(["create", "start", "die"], lines[1:]), lines
    assert lines[-1] == "done"
