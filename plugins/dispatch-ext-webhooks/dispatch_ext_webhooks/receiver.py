"""A local webhook receiver on 127.0.0.1 that verifies and records every request.

For trying the extension out, for demos and for tests::

    with Receiver(secret) as receiver:
        ext = WebhookExtension(url=receiver.url, secret=secret)
        ...
        receiver.wait_for(10)
        print(receiver.accepted)   # {webhook-id: event}, each id once

``respond`` decides each answer (the default accepts everything with 204), so a test can
play a receiver that is down, slow or gone. Run ``python -m dispatch_ext_webhooks.receiver
--delay 2`` for one in its own process.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook

__all__ = ["Delivery", "Receiver"]


@dataclass
class Delivery:
    """One request the receiver got."""

    number: int
    """1-based, in arrival order."""
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    """What the receiver answered."""
    verified: bool = False
    event: Any = None
    """The parsed body, when the signature verified."""
    error: str | None = None
    """Why verification failed."""

    @property
    def msg_id(self) -> str:
        return self.headers.get("webhook-id", "")


Responder = Callable[[Delivery], "int | tuple[int, dict[str, str]]"]


def _accept(delivery: Delivery) -> int:
    return 204


@dataclass
class _State:
    secret: str | None
    respond: Responder
    delay: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)
    deliveries: list[Delivery] = field(default_factory=list)
    accepted: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        state = self.server.state
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        headers = {key.lower(): value for key, value in self.headers.items()}
        with state.changed:
            delivery = Delivery(len(state.deliveries) + 1, self.path, headers, body)
            state.deliveries.append(delivery)
            state.changed.notify_all()
        if state.secret is not None:
            try:
                delivery.event = Webhook(state.secret).verify(body, headers)
                delivery.verified = True
            except Exception as exc:
                delivery.error = f"{type(exc).__name__}: {exc}"
        if state.delay:
            time.sleep(state.delay)
        answer = state.respond(delivery)
        status, extra = (answer, {}) if isinstance(answer, int) else answer
        if state.secret is not None and not delivery.verified and 200 <= status < 300:
            status = 401
        delivery.status = status
        self.send_response(status)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("content-length", "0")
        self.end_headers()
        with state.changed:
            if 200 <= status < 300 and delivery.msg_id not in state.accepted:
                state.accepted[delivery.msg_id] = delivery.event
            state.changed.notify_all()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State


class Receiver:
    """An HTTP server on 127.0.0.1 that verifies Standard Webhooks signatures.

    Args:
        secret: The signing secret to verify with; ``None`` records without verifying.
            A request that fails verification is answered 401.
        respond: Called for each request with its :class:`Delivery`; returns the
            status code (or ``(status, headers)``). Default: 204 for everything.
        delay: Seconds to wait before answering each request.
        port: 0 picks a free port.
    """

    def __init__(
        self,
        secret: str | None = None,
        *,
        respond: Responder | None = None,
        delay: float = 0.0,
        port: int = 0,
    ) -> None:
        self._state = _State(secret, respond or _accept, delay)
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.state = self._state
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks"

    @property
    def deliveries(self) -> list[Delivery]:
        """Every request so far, in arrival order."""
        with self._state.lock:
            return list(self._state.deliveries)

    @property
    def accepted(self) -> dict[str, Any]:
        """``webhook-id`` -> event, for each message acknowledged with a 2xx, once."""
        with self._state.lock:
            return dict(self._state.accepted)

    def respond_with(self, respond: Responder) -> None:
        self._state.respond = respond

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until ``count`` distinct messages were acknowledged."""
        return self._wait(lambda: len(self._state.accepted) >= count, timeout)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until ``count`` requests arrived, whatever the answer."""
        return self._wait(lambda: len(self._state.deliveries) >= count, timeout)

    def _wait(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._state.changed:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._state.changed.wait(left)
        return True

    def start(self) -> Receiver:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="webhook receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Run a receiver until interrupted; its URL is printed first, as a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--secret", default=None, help="verify signatures with this secret")
    args = parser.parse_args(argv)
    with Receiver(args.secret, delay=args.delay, port=args.port) as receiver:
        print(json.dumps({"url": receiver.url}), flush=True)
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
