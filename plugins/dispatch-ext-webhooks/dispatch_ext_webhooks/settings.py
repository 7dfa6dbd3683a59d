"""Reading the webhook settings: endpoints, secrets and event filters.

Settings come as keyword arguments (from ``[extensions.webhooks]`` in the config file, or
from code); the environment fills what they leave out. Every problem is reported as a
:class:`ValueError` that names the setting to fix. Secrets are wrapped in :class:`Secret`,
whose ``repr`` and ``str`` never show the value.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import fnmatch
import os
import secrets as _random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .events import EVENT_TYPES

__all__ = [
    "ENV_EVENTS",
    "ENV_OUTBOX",
    "ENV_SECRET",
    "ENV_URL",
    "Endpoint",
    "Secret",
    "generate_secret",
    "parse_endpoints",
    "parse_events",
    "positive",
    "redact_url",
    "seconds",
    "synchronous_mode",
]

ENV_URL = "DISPATCH_WEBHOOKS_URL"
ENV_SECRET = "DISPATCH_WEBHOOKS_SECRET"
ENV_OUTBOX = "DISPATCH_WEBHOOKS_OUTBOX"
ENV_EVENTS = "DISPATCH_WEBHOOKS_EVENTS"

SECRET_PREFIX = "whsec_"
# The Standard Webhooks specification asks for keys of 24 to 64 bytes.
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64

_ENDPOINT_KEYS = ("url", "secret", "secret_env", "events")


class Secret:
    """A signing secret (``whsec_`` + base64) that never shows itself in ``repr``/``str``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret's text, for signing."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('whsec_…hidden')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Endpoint:
    """One receiver: its URL, its signing secrets and the event types it wants.

    Several secrets sign every message with each of them (a space-separated
    ``webhook-signature``), so that a receiver can rotate its key without a gap.
    """

    url: str
    secrets: tuple[Secret, ...]
    events: frozenset[str]

    @property
    def label(self) -> str:
        """The URL without credentials or query string, safe for logs."""
        return redact_url(self.url)

    def wants(self, event_type: str) -> bool:
        return event_type in self.events

    def __repr__(self) -> str:
        events = "all" if len(self.events) == len(EVENT_TYPES) else sorted(self.events)
        return (
            f"Endpoint(url={self.label!r}, events={events!r}, secrets=<{len(self.secrets)} hidden>)"
        )


def generate_secret(nbytes: int = 32) -> str:
    """A new random signing secret in the ``whsec_<base64>`` form."""
    if not MIN_KEY_BYTES <= nbytes <= MAX_KEY_BYTES:
        raise ValueError(f"a secret has {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, not {nbytes}")
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(nbytes)).decode("ascii")


def redact_url(url: str) -> str:
    """``url`` without user, password and query string."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host if parts.port is None else f"{host}:{parts.port}"
    except ValueError:
        return "<malformed url>"
    query = "…" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _check_secret(value: object, setting: str) -> Secret:
    fix = (
        f"set {setting} to 'whsec_' followed by base64 "
        "(dispatch_ext_webhooks.generate_secret() makes one)"
    )
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"webhooks: {setting} is empty or not text; {fix}")
    value = value.strip()
    if not value.startswith(SECRET_PREFIX):
        raise ValueError(f"webhooks: {setting} does not start with 'whsec_'; {fix}")
    encoded = value[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"webhooks: {setting} is not valid base64 after 'whsec_'; {fix}") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(
            f"webhooks: {setting} decodes to {len(key)} bytes; Standard Webhooks keys have "
            f"{MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes; {fix}"
        )
    return Secret(value)


def _check_url(value: object, setting: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"webhooks: {setting} must be an http(s) URL, got {value!r}")
    value = value.strip()
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise ValueError(f"webhooks: {setting} is not a valid URL ({exc})") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(
            f"webhooks: {setting} must be an http:// or https:// URL with a host, "
            f"got {redact_url(value)!r}"
        )
    return value


def parse_events(value: object, setting: str) -> frozenset[str]:
    """The event types selected by ``value``: ``None`` (all), a comma list or a list.

    Entries are event types (``dispatch.job.failed``), the same without the
    ``dispatch.`` prefix (``job.failed``), or shell-style patterns (``dispatch.job.*``).
    """
    if value is None:
        return frozenset(EVENT_TYPES)
    if isinstance(value, str):
        items: list[object] = [part for part in value.split(",") if part.strip()]
    elif isinstance(value, Iterable) and not isinstance(value, Mapping):
        items = list(value)
    else:
        raise ValueError(f"webhooks: {setting} must be a list of event types, got {value!r}")
    selected: set[str] = set()
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"webhooks: {setting} holds {item!r}, which is not an event type")
        pattern = item.strip()
        if not pattern.startswith("dispatch.") and pattern != "*":
            pattern = "dispatch." + pattern
        matched = fnmatch.filter(EVENT_TYPES, pattern)
        if not matched:
            hint = difflib.get_close_matches(pattern, EVENT_TYPES, n=1)
            tail = (
                f"; did you mean {hint[0]!r}?"
                if hint
                else f"; the types are {', '.join(EVENT_TYPES)}"
            )
            raise ValueError(f"webhooks: {setting} entry {item!r} matches no event type{tail}")
        selected.update(matched)
    if not selected:
        raise ValueError(f"webhooks: {setting} selects no event type; leave it out to send all")
    return frozenset(selected)


def _endpoint(
    url: object,
    secret: object,
    events: object,
    *,
    url_setting: str,
    secret_setting: str,
    events_setting: str,
    missing_secret: str,
) -> Endpoint:
    checked_url = _check_url(url, url_setting)
    if secret is None:
        raise ValueError(
            f"webhooks: endpoint {redact_url(checked_url)!r} has no signing secret; "
            f"set {missing_secret}"
        )
    raw = [secret] if isinstance(secret, str) else secret
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ValueError(f"webhooks: {secret_setting} must be a secret or a list of secrets")
    secrets = tuple(_check_secret(s, secret_setting) for s in raw)
    return Endpoint(checked_url, secrets, parse_events(events, events_setting))


def _endpoint_from_table(index: int, table: object, env: Mapping[str, str]) -> Endpoint:
    where = f"endpoints[{index}]."
    if not isinstance(table, Mapping):
        raise ValueError(
            f"webhooks: endpoints[{index}] must be a table with url and secret, got {table!r}"
        )
    for key in table:
        if key not in _ENDPOINT_KEYS:
            hint = difflib.get_close_matches(str(key), _ENDPOINT_KEYS, n=1)
            tail = (
                f"; did you mean {hint[0]!r}?"
                if hint
                else f"; known keys: {', '.join(_ENDPOINT_KEYS)}"
            )
            raise ValueError(f"webhooks: endpoints[{index}] has unknown key {key!r}{tail}")
    secret = table.get("secret")
    secret_env = table.get("secret_env")
    if secret is None and secret_env is not None:
        if not isinstance(secret_env, str) or not env.get(secret_env):
            raise ValueError(
                f"webhooks: {where}secret_env names {secret_env!r}, which is not set "
                f"in the environment; export it or give {where}secret"
            )
        secret = env[secret_env]
    return _endpoint(
        table.get("url"),
        secret,
        table.get("events"),
        url_setting=f"{where}url",
        secret_setting=f"{where}secret_env" if table.get("secret") is None else f"{where}secret",
        events_setting=f"{where}events",
        missing_secret=f"{where}secret or {where}secret_env",
    )


def parse_endpoints(
    *,
    url: str | None,
    secret: str | list[str] | None,
    events: object,
    endpoints: object,
    env: Mapping[str, str] | None = None,
) -> tuple[Endpoint, ...]:
    """Every configured endpoint; the environment fills what the arguments leave out.

    ``url``/``secret``/``events`` describe one endpoint (the shorthand); ``endpoints`` is
    a list of tables with ``url``, ``secret`` (or ``secret_env``, the name of an
    environment variable holding it) and ``events``. ``DISPATCH_WEBHOOKS_URL`` is used
    only when neither ``url`` nor ``endpoints`` is given; ``DISPATCH_WEBHOOKS_SECRET`` and
    ``DISPATCH_WEBHOOKS_EVENTS`` complete the shorthand endpoint.
    """
    env = os.environ if env is None else env
    found: list[Endpoint] = []
    url_setting = secret_setting = events_setting = ""
    if url is None and endpoints is None and env.get(ENV_URL):
        url, url_setting = env[ENV_URL], ENV_URL
    if url is not None:
        if secret is None and env.get(ENV_SECRET):
            secret, secret_setting = env[ENV_SECRET], ENV_SECRET
        if events is None and env.get(ENV_EVENTS):
            events, events_setting = env[ENV_EVENTS], ENV_EVENTS
        found.append(
            _endpoint(
                url,
                secret,
                events,
                url_setting=url_setting or "url",
                secret_setting=secret_setting or "secret",
                events_setting=events_setting or "events",
                missing_secret=f"secret in [extensions.webhooks] or {ENV_SECRET}",
            )
        )
    elif secret is not None and endpoints is None:
        raise ValueError(
            f"webhooks: a secret is set but no url; set url in [extensions.webhooks] or {ENV_URL}"
        )
    if endpoints is not None:
        if isinstance(endpoints, Mapping) or not isinstance(endpoints, (list, tuple)):
            raise ValueError(
                "webhooks: endpoints must be a list of tables ([[extensions.webhooks.endpoints]])"
            )
        found.extend(_endpoint_from_table(i, table, env) for i, table in enumerate(endpoints))
    seen: set[str] = set()
    for endpoint in found:
        if endpoint.url in seen:
            raise ValueError(
                f"webhooks: endpoint {endpoint.label!r} is configured twice; give each URL once "
                "(list every event type it wants in its events)"
            )
        seen.add(endpoint.url)
    return tuple(found)


def positive(value: Any, setting: str, *, integer: bool = False) -> Any:
    """``value`` as a positive number, or an error naming the setting."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"webhooks: {setting} must be a positive number, got {value!r}")
    if integer:
        if int(value) != value:
            raise ValueError(f"webhooks: {setting} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def seconds(value: Any, setting: str) -> float:
    """``value`` as a number of seconds, 0 or more, or an error naming the setting."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"webhooks: {setting} must be 0 or more seconds, got {value!r}")
    return float(value)


SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


def synchronous_mode(value: Any) -> str:
    """An SQLite ``synchronous`` mode, upper-cased, or an error naming the setting."""
    if not isinstance(value, str) or value.upper() not in SYNCHRONOUS_MODES:
        raise ValueError(
            f"webhooks: synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, got {value!r}"
        )
    return value.upper()
