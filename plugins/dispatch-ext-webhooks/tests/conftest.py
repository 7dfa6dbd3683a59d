"""Fixtures: a signing secret, local receivers on 127.0.0.1, extensions that clean up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dispatch_ext_webhooks import WebhookExtension, generate_secret
from dispatch_ext_webhooks.receiver import Receiver

ENV = (
    "DISPATCH_WEBHOOKS_URL",
    "DISPATCH_WEBHOOKS_SECRET",
    "DISPATCH_WEBHOOKS_OUTBOX",
    "DISPATCH_WEBHOOKS_EVENTS",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def secret() -> str:
    return generate_secret()


@pytest.fixture
def serve() -> Iterator[Callable[..., Receiver]]:
    """Start a :class:`Receiver` (same arguments); every one is stopped after the test."""
    started: list[Receiver] = []

    def start(secret: str | None = None, **kwargs: Any) -> Receiver:
        receiver = Receiver(secret, **kwargs).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in reversed(started):
        receiver.stop()


@pytest.fixture
def outbox_path(tmp_path: Path) -> Path:
    return tmp_path / "outbox.sqlite3"


@pytest.fixture
def make_extension(outbox_path: Path) -> Iterator[Callable[..., WebhookExtension]]:
    """Build a :class:`WebhookExtension` with quick retries; its senders stop after the test."""
    made: list[WebhookExtension] = []

    def make(**kwargs: Any) -> WebhookExtension:
        kwargs.setdefault("outbox_path", outbox_path)
        kwargs.setdefault("backoff_base", 0.02)
        kwargs.setdefault("backoff_max", 0.2)
        kwargs.setdefault("shutdown_timeout", 0.2)
        kwargs.setdefault("poll_interval", 0.2)
        ext = WebhookExtension(**kwargs)
        made.append(ext)
        return ext

    yield make
    for ext in made:
        ext.on_shutdown()
