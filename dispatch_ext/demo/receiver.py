"""A local webhook receiver that checks every delivery's Standard Webhooks signature."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["WebhookReceiver", "new_secret"]

_TOLERANCE = 300  # seconds either side, as the specification recommends


def new_secret() -> str:
    """A fresh signing secret in the ``whsec_<base64>`` form."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _hmac_verifier(secret: str) -> Callable[[bytes, Mapping[str, str]], None]:
    """The Standard Webhooks check, for when the ``standardwebhooks`` package is absent."""
    key = base64.b64decode(secret.removeprefix("whsec_"))

    def verify(body: bytes, headers: Mapping[str, str]) -> None:
        msg_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
        if not msg_id or not stamp.isdigit():
            raise ValueError("webhook-id or webhook-timestamp header missing")
        if abs(time.time() - int(stamp)) > _TOLERANCE:
            raise ValueError("webhook-timestamp too far from now")
        digest = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
        expected = base64.b64encode(digest).decode()
        for entry in headers.get("webhook-signature", "").split():
            version, _, signature = entry.partition(",")
            if version == "v1" and hmac.compare_digest(signature, expected):
                return
        raise ValueError("no webhook-signature entry matches")

    return verify


def _verifier(secret: str) -> tuple[Callable[[bytes, Mapping[str, str]], None], str]:
    try:
        from standardwebhooks import Webhook
    except ImportError:
        return _hmac_verifier(secret), "dispatch-ext's own HMAC check"
    hook = Webhook(secret)

    def verify(body: bytes, headers: Mapping[str, str]) -> None:
        hook.verify(body, dict(headers))

    return verify, "standardwebhooks.Webhook.verify"


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 (a free port) that receives and verifies webhooks.

    Every delivery is recorded under its ``webhook-id`` (counted once, however often it
    arrives) and its signature checked: ``204`` when it verifies, ``401`` when not.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, secret: str, path: str = "/webhooks") -> None:
        self.secret = secret
        self.path = path
        self._verify, self.verified_with = _verifier(secret)
        self._lock = threading.Lock()
        self.requests = 0
        self.delivered: set[str] = set()
        self.verified: set[str] = set()
        self.rejected: dict[str, str] = {}
        self.types: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the webhook receiver is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self.path}"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver.receive(self.path, body, headers)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the demo reports deliveries itself

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="dispatch-ext-demo-webhooks", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def receive(self, path: str, body: bytes, headers: Mapping[str, str]) -> int:
        """Record and check one delivery; return the HTTP status to answer."""
        if path != self.path:
            with self._lock:
                self.requests += 1
            return 404
        msg_id = headers.get("webhook-id", "")
        try:
            kind = str(json.loads(body).get("type", "?"))
        except (ValueError, AttributeError):
            kind = "?"
        try:
            self._verify(body, headers)
        except Exception as exc:
            error: str | None = f"{type(exc).__name__}: {exc}"
        else:
            error = None
        with self._lock:
            self.requests += 1
            if msg_id not in self.delivered:
                self.types[kind] += 1
            self.delivered.add(msg_id)
            if error is None:
                self.verified.add(msg_id)
            else:
                self.rejected[msg_id] = error
        return 204 if error is None else 401

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` distinct deliveries arrived; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        while len(self.delivered) < count:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True
