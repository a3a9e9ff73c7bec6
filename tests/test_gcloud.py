"""The real gcloud CLI against the fake: what users will compare bulkcancel's view with.

Redis operations share the ``projects/*/locations/*/operations/*`` shape, so ``gcloud redis
operations`` aimed at the fake (``api_endpoint_overrides/redis``, credentials disabled, an
isolated ``CLOUDSDK_CONFIG``) lists, describes and cancels its operations. Skipped without gcloud.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bulkcancel.testing import Behavior, FakeOperationsServer, populate

GCLOUD = shutil.which("gcloud")
pytestmark = pytest.mark.skipif(GCLOUD is None, reason="the gcloud CLI is not installed")
PARENT = "projects/gc-proj/locations/us-central1"


async def gcloud(config: Path, *args: str) -> tuple[int, str, str]:
    assert GCLOUD is not None
    env = {**os.environ, "CLOUDSDK_CONFIG": str(config), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    process = await asyncio.create_subprocess_exec(
        GCLOUD, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def configured(tmp_path: Path, url: str) -> Path:
    config = tmp_path / "gcloud"
    config.mkdir()
    for setting in (
        ("auth/disable_credentials", "True"),
        ("api_endpoint_overrides/redis", f"{url}/"),
        ("core/project", "gc-proj"),
        ("core/disable_usage_reporting", "True"),
        ("component_manager/disable_update_check", "True"),
    ):
        code, _, err = await gcloud(config, "config", "set", *setting)
        assert code == 0, err
    return config


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def sane_times(operation: dict[str, Any]) -> None:
    meta = operation["metadata"]
    created = epoch(meta["createTime"])
    assert abs(created - time.time()) < 86_400 * 2  # not 1970, not the future
    if "endTime" in meta:
        assert created <= epoch(meta["endTime"]) <= time.time() + 60


async def test_gcloud_lists_every_page_and_sees_sane_metadata(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    names = populate(server, PARENT, 7)
    server.add_operation(f"{PARENT}/operations/finished", Behavior.ALREADY_DONE)
    async with server.serve() as url:
        config = await configured(tmp_path, url)
        code, out, err = await gcloud(
            config, "redis", "operations", "list", "--region=us-central1", "--page-size=3",
            "--format=json",
        )  # fmt: skip
    assert code == 0, err
    listed = json.loads(out)
    assert [op["name"] for op in listed] == [*names, f"{PARENT}/operations/finished"]
    lists = server.requests("list")
    assert len(lists) == 3 and [r.query.get("pageSize") for r in lists] == ["3"] * 3
    assert all(r.authorization is None for r in lists)
    assert all((r.user_agent or "").startswith("google-cloud-sdk") for r in lists)
    for operation in listed:
        sane_times(operation)
        assert operation["metadata"]["target"] == f"{PARENT}/targets/prod"
    assert listed[-1]["done"] is True and "endTime" in listed[-1]["metadata"]


async def test_gcloud_cancels_and_describes_the_outcome(tmp_path: Path) -> None:
    server = FakeOperationsServer()
    name = f"{PARENT}/operations/op-1"
    server.add_operation(name, Behavior.CANCELS)
    async with server.serve() as url:
        config = await configured(tmp_path, url)
        code, _, err = await gcloud(
            config, "redis", "operations", "cancel", "op-1", "--region=us-central1", "--quiet"
        )
        assert code == 0, err
        code, out, err = await gcloud(
            config, "redis", "operations", "describe", "op-1", "--region=us-central1",
            "--format=json",
        )  # fmt: skip
        assert code == 0, err
        missing = await gcloud(
            config, "redis", "operations", "describe", "nope", "--region=us-central1"
        )
    assert server.operation(name).accepted_cancels == 1
    described = json.loads(out)
    assert described["done"] is True and described["error"]["code"] == 1
    assert described["metadata"]["requestedCancellation"] is True
    sane_times(described)
    assert missing[0] != 0 and "NOT_FOUND" in missing[2]
