"""The three built-in extensions, pip-installed from plugins/, found by real discovery.

Needs ``pip install -r requirements/test.txt`` (which installs the three from plugins/).

They load side by side on one engine and all hear the same events: the audit log, the
metrics counters and the webhooks received count the same thing. The engine runs in a
fresh interpreter, so that setting the global OpenTelemetry provider (allowed once per
process) and the configuration file stay out of the rest of the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from dispatch_ext_webhooks import HOOK_EVENTS, generate_secret
from dispatch_ext_webhooks.extension import INACTIVE
from dispatch_ext_webhooks.receiver import Receiver

BUILTINS = ("audit", "metrics", "webhooks")
MAIN = "from dispatch_ext.cli import main; main(prog_name='dispatch-ext')"

RUN = textwrap.dedent(
    """
    import asyncio, json, sys, time

    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    # The application configures OpenTelemetry; the discovered metrics extension uses it.
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

    from dispatch_ext.engine import Engine, MemoryStore
    from dispatch_ext.testing import Recorder

    recorder = Recorder()
    engine = Engine(store=MemoryStore(), extensions=[recorder], config=sys.argv[1], concurrency=2)
    tries = {}

    @engine.job("ok")
    async def ok(payload):
        await asyncio.sleep(0.005)

    @engine.job("flaky", max_retries=2, backoff=0.01)
    async def flaky(payload):
        tries[payload] = tries.get(payload, 0) + 1
        if tries[payload] == 1:
            raise TimeoutError("first try")

    @engine.job("doomed", max_retries=0)
    def doomed(payload):
        raise ValueError("no")

    @engine.workflow("onboard")
    async def onboard(wf, payload):
        await wf.step("create", lambda: 1)
        return "done"

    @engine.workflow("broken")
    async def broken(wf, payload):
        def fail():
            raise KeyError("x")
        await wf.step("fail", fail)

    engine.cron("tick", "* * * * * *", "ok")

    async def main():
        async with engine:
            for i in range(5):
                await engine.enqueue("ok", i)
            await engine.enqueue("flaky", "a")
            await engine.enqueue("doomed", "b")
            await engine.start_workflow("onboard")
            await engine.start_workflow("broken")
            deadline = time.monotonic() + 10
            while not recorder.of("on_cron_fired") and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await engine.drain(timeout=30)

    asyncio.run(main())
    totals = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name.startswith("dispatch.") and not m.name.endswith("duration"):
                    totals[m.name] = sum(p.value for p in m.data.data_points)
    print(json.dumps({
        "registered": [name for name, _ in engine.registry.extensions()],
        "records": {r.name: r.status for r in engine.registry.records},
        "heard": [event.hook for event in recorder.events],
        "metrics": totals,
    }))
    """
)


@pytest.fixture
def clean_env() -> dict[str, str]:
    """The environment without any DISPATCH_* variable of the machine running the tests."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}


def toml_string(value: object) -> str:
    return json.dumps(str(value))  # a TOML basic string is JSON-compatible


def cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", MAIN, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dispatch_ext_list_shows_the_three_and_why_webhooks_is_inactive(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    listed = cli("list", "--json", cwd=tmp_path, env=clean_env)
    assert listed.returncode == 0, listed.stderr
    records = {r["name"]: r for r in json.loads(listed.stdout)}
    for name in BUILTINS:
        assert records[name]["status"] == "loaded", records[name]
        assert records[name]["distribution"] == f"dispatch-ext-{name}"
    human = cli("list", cwd=tmp_path, env=clean_env)
    assert human.returncode == 0, human.stderr
    assert INACTIVE in human.stdout
    info = cli("info", "webhooks", cwd=tmp_path, env=clean_env)
    assert info.returncode == 0, info.stderr
    assert "inactive: no endpoint configured" in " ".join(info.stdout.split())


def test_a_configured_webhooks_extension_shows_its_endpoint_but_not_its_secret(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    secret = generate_secret()
    config = tmp_path / "dispatch.toml"
    config.write_text(
        "[extensions.webhooks]\n"
        f"url = {toml_string('https://hooks.example.com/in')}\n"
        f"secret = {toml_string(secret)}\n"
        f"outbox_path = {toml_string(tmp_path / 'outbox.sqlite3')}\n",
        encoding="utf-8",
    )
    shown = cli("info", "webhooks", cwd=tmp_path, env=clean_env)
    assert shown.returncode == 0, shown.stderr
    assert "https://hooks.example.com/in" in shown.stdout
    assert secret not in shown.stdout
    assert secret[6:20] not in shown.stdout


def test_a_bad_secret_fails_only_the_webhooks_extension_and_says_why(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    config = tmp_path / "dispatch.toml"
    config.write_text(
        '[extensions.webhooks]\nurl = "https://hooks.example.com/in"\nsecret = "hunter2"\n',
        encoding="utf-8",
    )
    listed = cli("list", "--json", cwd=tmp_path, env=clean_env)
    assert listed.returncode == 0, listed.stderr
    records = {r["name"]: r for r in json.loads(listed.stdout)}
    assert records["webhooks"]["status"] == "failed"
    assert "secret does not start with 'whsec_'" in records["webhooks"]["error"]
    assert "hunter2" not in listed.stdout
    assert records["audit"]["status"] == records["metrics"]["status"] == "loaded"


def test_audit_metrics_and_webhooks_hear_the_same_events(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    secret = generate_secret()
    audit_log = tmp_path / "audit.jsonl"
    config = tmp_path / "dispatch.toml"
    with Receiver(secret) as receiver:
        config.write_text(
            "[extensions.audit]\n"
            f"path = {toml_string(audit_log)}\n"
            "flush_interval = 0\n"
            "[extensions.webhooks]\n"
            f"url = {toml_string(receiver.url)}\n"
            f"outbox_path = {toml_string(tmp_path / 'outbox.sqlite3')}\n"
            "shutdown_timeout = 20\n",
            encoding="utf-8",
        )
        env = {**clean_env, "DISPATCH_WEBHOOKS_SECRET": secret}  # the secret stays out of the file
        done = subprocess.run(
            [sys.executable, "-W", "error", "-c", RUN, str(config)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        accepted = receiver.accepted
        deliveries = receiver.deliveries

    for name in BUILTINS:
        assert result["records"][name] == "loaded"
    assert result["registered"] == ["recorder", *BUILTINS]

    heard = Counter(result["heard"])
    assert set(heard) == set(HOOK_EVENTS) | {"on_shutdown"}  # every kind of event happened

    # audit: one line per event, shutdown included
    lines = [json.loads(line) for line in audit_log.read_text(encoding="utf-8").splitlines()]
    audited = Counter(line["action"] for line in lines)
    expected = Counter(
        {
            ("engine.shutdown" if hook == "on_shutdown" else hook[3:].replace("_", ".", 1)): n
            for hook, n in heard.items()
        }
    )
    assert audited == expected

    # metrics: one counter per event kind
    assert result["metrics"] == {
        HOOK_EVENTS[hook]: float(n) for hook, n in heard.items() if hook != "on_shutdown"
    }

    # webhooks: one verified message per event, delivered before the engine's shutdown ended
    assert all(d.verified for d in deliveries)
    assert Counter(e["type"] for e in accepted.values()) == Counter(
        {HOOK_EVENTS[hook]: n for hook, n in heard.items() if hook != "on_shutdown"}
    )
