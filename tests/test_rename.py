"""``docker rename`` through the API, on the fake runtime: dockerd's answers and event."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from asyncstart import errors

from .conftest import OpenEngine
from .test_api import Api, http, open_api, raw, sleeper

pytestmark = pytest.mark.anyio


@pytest.fixture
async def api(open_engine: OpenEngine, tmp_path: Path) -> AsyncIterator[Api]:
    async with open_api(open_engine, tmp_path / "s.sock") as opened:
        yield opened


async def test_rename_answers_as_dockerd_and_announces_it(api: Api) -> None:
    client = api.client
    began = time.time()
    cid = await sleeper(api, "old")
    await sleeper(api, "taken")
    await client.container_rename("old", "new")
    assert (await client.container_inspect(cid))["Name"] == "/new"
    assert (await client.container_inspect("new"))["Id"] == cid
    with pytest.raises(errors.NotFound):
        await client.container_inspect("old")
    # The old name is free again; the new one is this container's.
    await sleeper(api, "old")
    with pytest.raises(errors.Conflict, match='^Conflict. The container name "/taken" is already'):
        await client.container_rename("new", "taken")
    with pytest.raises(errors.InvalidParameter, match="same name as its current name"):
        await client.container_rename("new", "new")
    with pytest.raises(errors.InvalidParameter, match=r"^Invalid container name \(a b\)"):
        await client.container_rename("new", "a b")
    empty = await raw(api.sock, http("POST", "/containers/new/rename?name="))
    assert (empty.status, empty.json()["message"]) == (
        400,
        "Neither old nor new names may be empty",
    )
    with pytest.raises(errors.NotFound, match="^No such container: nope$"):
        await client.container_rename("nope", "x1")
    renames = [
        e
        async for e in client.events(since=began, until=time.time(), filters={"event": ["rename"]})
    ]
    assert [
        (e["Actor"]["Attributes"]["oldName"], e["Actor"]["Attributes"]["name"]) for e in renames
    ] == [("/old", "new")]
