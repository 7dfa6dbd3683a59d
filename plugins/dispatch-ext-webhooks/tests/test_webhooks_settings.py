"""Settings of the webhooks extension: endpoints, secrets, filters, environment, secrecy."""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from dispatch_ext_webhooks import EVENT_TYPES, WebhookExtension, generate_secret
from dispatch_ext_webhooks.extension import DEFAULT_OUTBOX, INACTIVE

from dispatch_ext import HOOK_NAMES, Job, Registry
from dispatch_ext.testing import assert_valid_extension

URL = "https://hooks.example.com/dispatch"


def test_without_an_endpoint_it_loads_says_why_it_is_inactive_and_does_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ext = WebhookExtension()
    assert not ext.active
    assert ext.status_detail == INACTIVE
    assert INACTIVE == (
        "inactive: no endpoint configured (set url/secret in [extensions.webhooks] "
        "or DISPATCH_WEBHOOKS_URL)"
    )
    registry = Registry(strict=True)
    registry.register(ext)
    for _ in range(3):
        registry.emit("on_job_enqueued", job=Job(id="1", name="a"))
    registry.emit("on_shutdown")
    assert ext.flush(0.1)
    assert list(tmp_path.iterdir()) == []  # no outbox was created


def test_it_implements_every_hook() -> None:
    ext = WebhookExtension()
    assert_valid_extension(ext)
    registry = Registry()
    registry.register(ext)
    assert registry.hooks_of("webhooks") == list(HOOK_NAMES)


def test_the_environment_fills_what_the_settings_leave_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = generate_secret()
    monkeypatch.setenv("DISPATCH_WEBHOOKS_URL", URL)
    monkeypatch.setenv("DISPATCH_WEBHOOKS_SECRET", secret)
    monkeypatch.setenv("DISPATCH_WEBHOOKS_OUTBOX", str(tmp_path / "env.sqlite3"))
    monkeypatch.setenv("DISPATCH_WEBHOOKS_EVENTS", "dispatch.job.failed, job.dlq")
    ext = WebhookExtension()
    (endpoint,) = ext.endpoints
    assert endpoint.url == URL
    assert endpoint.secrets[0].reveal() == secret
    assert endpoint.events == {"dispatch.job.failed", "dispatch.job.dlq"}
    assert ext.outbox_path == tmp_path / "env.sqlite3"
    assert ext.status_detail.startswith(f"1 endpoint(s): {URL}; outbox ")


def test_a_configured_url_takes_the_secret_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = generate_secret()
    monkeypatch.setenv("DISPATCH_WEBHOOKS_URL", "https://other.example.com/")
    monkeypatch.setenv("DISPATCH_WEBHOOKS_SECRET", secret)
    ext = WebhookExtension(url=URL, events=["dispatch.workflow.*"])
    (endpoint,) = ext.endpoints
    assert endpoint.url == URL  # the configured url wins
    assert endpoint.secrets[0].reveal() == secret
    assert endpoint.events == {t for t in EVENT_TYPES if t.startswith("dispatch.workflow.")}


def test_several_endpoints_each_with_its_secret_and_filter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = generate_secret(), generate_secret()
    monkeypatch.setenv("OPS_HOOK_SECRET", second)
    monkeypatch.setenv("DISPATCH_WEBHOOKS_URL", "https://ignored.example.com/")
    ext = WebhookExtension(
        endpoints=[
            {"url": URL, "secret": first},
            {
                "url": "https://ops.example.com/h",
                "secret_env": "OPS_HOOK_SECRET",
                "events": ["job.failed", "dispatch.job.dlq"],
            },
        ]
    )
    assert [e.url for e in ext.endpoints] == [URL, "https://ops.example.com/h"]
    assert ext.endpoints[0].events == frozenset(EVENT_TYPES)
    assert ext.endpoints[1].events == {"dispatch.job.failed", "dispatch.job.dlq"}
    assert ext.endpoints[1].secrets[0].reveal() == second


def test_the_default_outbox_is_in_the_current_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    ext = WebhookExtension(url=URL, secret=generate_secret())
    assert ext.outbox_path == tmp_path / DEFAULT_OUTBOX
    monkeypatch.chdir(os.path.dirname(tmp_path))
    assert ext.outbox_path == tmp_path / DEFAULT_OUTBOX  # resolved once, at construction


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("s3cr3t", "does not start with 'whsec_'"),
        ("whsec_not base64!", "is not valid base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "decodes to 5 bytes"),
        ("", "is empty"),
    ],
)
def test_a_bad_secret_is_a_clear_error_naming_the_setting(secret: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        WebhookExtension(url=URL, secret=secret)
    message = str(caught.value)
    assert message.startswith("webhooks: secret ")
    assert "whsec_" in message  # says what a good one looks like
    if len(secret) > 8:
        assert secret not in message


def test_a_bad_secret_in_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISPATCH_WEBHOOKS_URL", URL)
    monkeypatch.setenv("DISPATCH_WEBHOOKS_SECRET", "hunter2")
    with pytest.raises(ValueError, match="webhooks: DISPATCH_WEBHOOKS_SECRET does not start"):
        WebhookExtension()


def test_a_bad_secret_of_a_listed_endpoint_names_its_position() -> None:
    with pytest.raises(ValueError, match=r"endpoints\[1\]\.secret does not start with"):
        WebhookExtension(
            endpoints=[
                {"url": URL, "secret": generate_secret()},
                {"url": "https://b.example.com/", "secret": "plain"},
            ]
        )


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"url": URL}, "has no signing secret; set secret in \\[extensions.webhooks\\]"),
        ({"secret": generate_secret()}, "a secret is set but no url"),
        ({"url": "ftp://example.com/", "secret": generate_secret()}, "url must be an http"),
        ({"url": URL, "secret": generate_secret(), "events": ["job.complete"]}, "did you mean"),
        (
            {"endpoints": [{"url": URL, "secret": generate_secret(), "event": ["job.failed"]}]},
            "unknown key 'event'; did you mean 'events'",
        ),
        (
            {"endpoints": [{"url": URL, "secret_env": "NOT_SET_ANYWHERE"}]},
            "secret_env names 'NOT_SET_ANYWHERE', which is not set",
        ),
        (
            {
                "url": URL,
                "secret": generate_secret(),
                "endpoints": [{"url": URL, "secret": generate_secret()}],
            },
            "configured twice",
        ),
        ({"url": URL, "secret": generate_secret(), "timeout": 0}, "timeout must be a positive"),
        (
            {"url": URL, "secret": generate_secret(), "max_attempts": 2.5},
            "max_attempts must be a whole",
        ),
        (
            {"url": URL, "secret": generate_secret(), "synchronous": "SOMETIMES"},
            "synchronous must be",
        ),
    ],
)
def test_bad_settings_are_refused_with_the_setting_named(
    kwargs: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        WebhookExtension(**kwargs)  # type: ignore[arg-type]


def test_event_filters_accept_short_names_patterns_and_comma_lists() -> None:
    secret = generate_secret()
    ext = WebhookExtension(url=URL, secret=secret, events="job.failed,dispatch.cron.*")
    assert ext.endpoints[0].events == {"dispatch.job.failed", "dispatch.cron.fired"}
    ext = WebhookExtension(url=URL, secret=secret, events=["*"])
    assert ext.endpoints[0].events == frozenset(EVENT_TYPES)


def test_secrets_never_show_in_repr_status_or_logs(
    make_extension: Callable[..., WebhookExtension],
    serve: Callable[..., object],
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret, rotated = generate_secret(), generate_secret()
    receiver = serve(respond=lambda delivery: 503 if delivery.number == 1 else 400)
    caplog.set_level(logging.DEBUG)
    ext = make_extension(url=receiver.url + "?token=abc", secret=[secret, rotated], max_attempts=3)
    registry = Registry(strict=True)
    registry.register(ext)
    registry.emit("on_job_enqueued", job=Job(id="1", name="a"))
    assert ext.flush(10)
    ours = [repr(ext), str(ext), ext.status_detail, repr(ext.endpoints)]
    ours += [r.getMessage() for r in caplog.records if r.name == "dispatch_ext_webhooks"]
    everything = [*ours, repr(vars(ext)), *(r.getMessage() for r in caplog.records)]
    assert any("gave up" in text for text in ours)  # the failures were logged...
    for text in everything:
        for value in (secret, rotated, secret[6:], rotated[6:]):
            assert value not in text  # ...without the secrets
    for text in ours:
        assert "token=abc" not in text  # nor the URL's query string
    assert "hidden" in repr(ext.endpoints[0])
