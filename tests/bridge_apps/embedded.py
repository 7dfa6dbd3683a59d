"""The bridge test scenarios on the embedded engine, heard by the same recorder.

:func:`embedded_sequences` runs each scenario once and returns the hooks the recorder heard
for it, in order; the bridge tests compare their own sequences with these.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from bridge_apps.recorder import FileRecorder
from dispatch_ext.config import Config
from dispatch_ext.engine import Engine, MemoryStore


def _hooks_of(events: list[dict[str, Any]], key: str, ident: str) -> list[str]:
    return [e["hook"] for e in events if (e.get(key) or {}).get("id") == ident]


def embedded_sequences(path: Path, *, cron: bool = False) -> dict[str, list[str]]:
    """Run the scenarios on an embedded engine; ``{scenario: hooks heard}``.

    Scenarios: ``success``, ``fails twice then succeeds``, ``retries exhausted`` (one
    retry), ``workflow whose middle step fails`` (run-level hooks) and, with ``cron``,
    ``cron`` (the first job a one-second cron entry enqueued).
    """
    engine = Engine(
        store=MemoryStore(),
        extensions=[FileRecorder(str(path))],
        autoload=False,
        concurrency=1,
        config=Config(),
    )
    failures: dict[str, int] = {}

    @engine.job("ok", backoff=0.01)
    def ok(payload: Any) -> None:
        return None

    @engine.job("flaky", max_retries=5, backoff=0.01)
    def flaky(payload: Any) -> None:
        failures[payload["key"]] = failures.get(payload["key"], 0) + 1
        if failures[payload["key"]] <= payload["fails"]:
            raise RuntimeError(f"attempt {failures[payload['key']]} fails")

    @engine.job("doomed", max_retries=1, backoff=0.01)
    def doomed(payload: Any) -> None:
        raise ValueError("always fails")

    def add(x: int, y: int = 1) -> int:
        return x + y

    def fail(x: int) -> int:
        raise ValueError(f"step got {x} and fails")

    @engine.workflow("three steps")
    async def three_steps(wf: Any, payload: Any) -> Any:
        first = await wf.step("add", add, 1)
        second = await wf.step("fail", fail, first)
        return await wf.step("add again", add, second)

    if cron:
        engine.cron("tick", "* * * * * *", "ok", {"x": 41})

    async def run() -> dict[str, str]:
        async with engine:
            ids = {
                "success": (await engine.enqueue("ok", {"x": 1})).id,
                "fails twice then succeeds": (
                    await engine.enqueue("flaky", {"key": "a", "fails": 2})
                ).id,
                "retries exhausted": (await engine.enqueue("doomed")).id,
                "workflow whose middle step fails": (await engine.start_workflow("three steps")).id,
            }
            deadline = time.monotonic() + 10
            while cron and not _cron_job(path) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await engine.drain(timeout=10)
        return ids

    ids = asyncio.run(run())
    events = _read(path)
    sequences = {
        scenario: _hooks_of(events, "job", ident)
        for scenario, ident in ids.items()
        if scenario != "workflow whose middle step fails"
    }
    sequences["workflow whose middle step fails"] = _hooks_of(
        events, "run", ids["workflow whose middle step fails"]
    )
    if cron:
        job_id = _cron_job(path)
        assert job_id, "the embedded engine's cron entry never fired"
        sequences["cron"] = _hooks_of(events, "job", job_id)
    return sequences


def _read(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _cron_job(path: Path) -> str | None:
    fired = [e for e in _read(path) if e["hook"] == "on_cron_fired"]
    return str(fired[0]["job"]["id"]) if fired else None
