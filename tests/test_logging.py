"""The engine is silent unless the program asks: each case in a fresh interpreter (structlog's
and logging's configuration are process-wide)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

_RUN = """
import anyio, asyncstart
async def main(root):
    config = asyncstart.DaemonConfig(data_root=f"{root}/d", exec_root=f"{root}/x", runtime="fake")
    async with asyncstart.open_daemon(config) as daemon:
        cid = await daemon.container_create("web", {"Image": "busybox", "Cmd": ["true"]})
        await daemon.container_start(cid)
anyio.run(main, ROOT)
"""


def _run(tmp_path: Path, preamble: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(preamble) + _RUN.replace("ROOT", repr(str(tmp_path)))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip


def test_an_unconfigured_program_hears_nothing(tmp_path: Path) -> None:
    result = _run(tmp_path, "")
    assert (result.stdout, result.stderr) == ("", "")


def test_the_standard_logging_module_governs_the_asyncstart_loggers(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        """
        import logging, sys
        logging.basicConfig(stream=sys.stdout, format="%(name)s %(message)s")
        logging.getLogger("asyncstart").setLevel(logging.DEBUG)
        logging.getLogger("asyncstart.saga").setLevel(logging.WARNING)
    """,
    )
    assert "asyncstart.daemon event='daemon.ready'" in result.stdout
    assert "phase.complete" not in result.stdout  # (asyncstart.saga held at warning)


def test_a_structlog_program_keeps_its_processors(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        """
        import structlog
        def mark(logger, method, event):
            print("MINE", method, event["event"])
            raise structlog.DropEvent
        structlog.configure(processors=[mark])
    """,
    )
    assert "MINE info daemon.ready" in result.stdout
    assert "MINE debug phase.complete" in result.stdout
