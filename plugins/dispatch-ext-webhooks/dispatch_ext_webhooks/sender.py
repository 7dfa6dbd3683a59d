"""The background sender: one daemon thread per endpoint, delivering from the outbox.

What a receiver's answer means:

========================  ==========================================================
2xx                       delivered; the row is deleted
410 Gone                  the endpoint is disabled (recorded in the outbox) and what
                          is pending for it is cancelled
429, 5xx, network errors  retried with exponential backoff and jitter; a
                          ``Retry-After`` header is followed, capped at ``backoff_max``
3xx                       given up: redirects are not followed (the signature is for
                          one URL); the reason is recorded
other 4xx                 given up; the status and the start of the answer are recorded
========================  ==========================================================

A sender claims up to :data:`BATCH` due messages at once and posts them one at a time;
after a retryable failure the rest of the batch is released and the whole endpoint
pauses (exponentially in the number of failures in a row), so a receiver that is down
gets one request per pause, not one per pending message.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from standardwebhooks import Webhook

from .outbox import Claimed, Outbox
from .settings import Endpoint

__all__ = ["DeliveryStats", "EndpointSender", "SenderSettings", "backoff"]

logger = logging.getLogger("dispatch_ext_webhooks")

USER_AGENT = "dispatch-ext-webhooks/0.1.0"
BATCH = 32
"""Messages a sender claims at once."""
_ACK_INTERVAL = 0.2  # seconds between removals of acknowledged messages from the outbox
_REASON_LIMIT = 300


@dataclass(frozen=True)
class SenderSettings:
    """How senders deliver; see :class:`~dispatch_ext_webhooks.WebhookExtension`."""

    outbox_path: Path
    synchronous: str
    timeout: float
    max_attempts: int
    backoff_base: float
    backoff_max: float
    poll_interval: float

    @property
    def lease(self) -> float:
        """Seconds a claimed message stays reserved (per message of a batch): longer than
        any one request can take."""
        return 4 * self.timeout + 5.0


class DeliveryStats:
    """What the senders of one extension did in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.delivered = 0
        self.retried = 0
        self.given_up = 0

    def add(self, field: str) -> None:
        with self._lock:
            setattr(self, field, getattr(self, field) + 1)


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait after failure number ``attempt`` (1-based): exponential, jittered.

    The delay doubles from ``base`` up to ``cap``; a random part of up to half of it
    keeps many senders from retrying in step.
    """
    delay = min(cap, base * 2.0 ** min(attempt - 1, 60))
    return delay * random.uniform(0.5, 1.0)


def retry_after(value: str | None, cap: float) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
        seconds = (moment - dt.datetime.now(dt.timezone.utc)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(cap, max(0.0, seconds))


def _excerpt(response: httpx.Response) -> str:
    try:
        text = response.text.strip()
    except Exception:  # an undecodable answer: say so rather than fail
        return "<undecodable body>"
    if len(text) > _REASON_LIMIT:
        text = text[:_REASON_LIMIT] + "…"
    return text


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class _Outcome:
    kind: str  # "delivered", "retry", "give_up", "gone"
    status: int | None
    reason: str
    wait: float | None = None  # Retry-After, when the receiver gave one


def classify(response: httpx.Response, cap: float) -> _Outcome:
    """What an HTTP answer means for the delivery."""
    status = response.status_code
    label = f"HTTP {status} {response.reason_phrase}".rstrip()
    if 200 <= status < 300:
        return _Outcome("delivered", status, label)
    if status == 410:
        return _Outcome("gone", status, f"endpoint disabled: the receiver answered {label}")
    if status == 429 or 500 <= status < 600:
        return _Outcome(
            "retry", status, label, retry_after(response.headers.get("retry-after"), cap)
        )
    if 300 <= status < 400:
        location = response.headers.get("location", "?")
        return _Outcome(
            "give_up",
            status,
            f"{label} to {location}: redirects are not followed; configure the final URL",
        )
    if 400 <= status < 500:
        excerpt = _excerpt(response)
        tail = f": {excerpt}" if excerpt else ""
        return _Outcome("give_up", status, f"receiver refused the message with {label}{tail}")
    return _Outcome("retry", status, label)


class EndpointSender(threading.Thread):
    """Delivers the outbox's rows for one endpoint until stopped or drained."""

    def __init__(
        self,
        endpoint: Endpoint,
        settings: SenderSettings,
        stats: DeliveryStats,
        on_disabled: Callable[[str, str], None],
    ) -> None:
        super().__init__(name=f"dispatch-webhooks {endpoint.label}", daemon=True)
        self.endpoint = endpoint
        self.settings = settings
        self.stats = stats
        self._on_disabled = on_disabled
        self._signers = [Webhook(secret.reveal()) for secret in endpoint.secrets]
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._deadline: float | None = None
        self._pause_until = 0.0
        self._failures_in_row = 0
        self._idle = False  # looking for rows or waiting for new ones: wake() matters
        self._checkpointed = 0.0
        self.disabled = False

    # -- control from other threads -----------------------------------------------------

    def wake(self) -> None:
        """New rows are in the outbox (a no-op unless the sender waits for some)."""
        if self._idle:
            self._wake.set()

    def drain(self, deadline: float) -> None:
        """Deliver what is due before ``deadline`` (``time.time()``), then stop."""
        self._deadline = deadline
        self._wake.set()

    def halt(self) -> None:
        """Stop after the request in flight, if any."""
        self._halt.set()
        self._wake.set()

    # -- the thread ---------------------------------------------------------------------

    def run(self) -> None:
        outbox: Outbox | None = None
        client = httpx.Client(
            timeout=self.settings.timeout,
            follow_redirects=False,
            headers={"user-agent": USER_AGENT, "content-type": "application/json"},
        )
        try:
            while not self._halt.is_set():
                if outbox is None:
                    outbox = self._open()
                    if outbox is None:
                        if self._sleep(self.settings.poll_interval):
                            break
                        continue
                try:
                    if self._step(outbox, client):
                        break
                except Exception:  # e.g. the disk is full: log, wait, try again
                    logger.exception("webhooks: sender for %s hit an error", self.endpoint.label)
                    if self._sleep(self.settings.poll_interval):
                        break
        finally:
            client.close()
            if outbox is not None:
                outbox.close()

    def _open(self) -> Outbox | None:
        try:
            outbox = Outbox(self.settings.outbox_path, synchronous=self.settings.synchronous)
        except Exception as exc:
            logger.error(
                "webhooks: sender for %s cannot open the outbox: %s", self.endpoint.label, exc
            )
            return None
        try:
            released = outbox.release_orphans()
            self.disabled = self.endpoint.url in outbox.disabled()
        except Exception as exc:
            outbox.close()
            logger.error(
                "webhooks: sender for %s cannot read the outbox: %s", self.endpoint.label, exc
            )
            return None
        if released:
            logger.info(
                "webhooks: %d message(s) claimed by a process that is gone will be sent again",
                released,
            )
        return outbox

    def _sleep(self, seconds: float) -> bool:
        """Wait up to ``seconds`` or until woken; ``True`` when the drain deadline passed."""
        deadline = self._deadline
        if deadline is not None:
            seconds = min(seconds, deadline - time.time())
        if seconds > 0:
            self._wake.wait(seconds)
            self._wake.clear()
        return deadline is not None and time.time() >= deadline

    def _step(self, outbox: Outbox, client: httpx.Client) -> bool:
        """Deliver a batch of messages or wait for some; ``True`` when the thread should end."""
        now = time.time()
        deadline = self._deadline
        if deadline is not None and now >= deadline:
            return True
        if now - self._checkpointed >= self.settings.poll_interval:
            outbox.checkpoint()  # fold what the hooks appended into the main file
            self._checkpointed = now
        if self.disabled:
            return deadline is not None or self._sleep(self.settings.poll_interval)
        if now < self._pause_until:
            if deadline is not None and self._pause_until >= deadline:
                return True
            return self._sleep(self._pause_until - now)
        self._idle = True  # from here on, a new row must wake the sender
        batch = outbox.claim(self.endpoint.url, now, self.settings.lease, BATCH)
        if not batch:
            due = outbox.next_due(self.endpoint.url)
            if deadline is not None and (due is None or due >= deadline):
                return True
            wait = self.settings.poll_interval if due is None else due - now
            return self._sleep(min(self.settings.poll_interval, max(0.0, wait)))
        self._idle = False
        self._deliver_batch(outbox, client, batch)
        return False

    def _deliver_batch(self, outbox: Outbox, client: httpx.Client, batch: list[Claimed]) -> None:
        """Send the claimed messages in order until one calls for a pause.

        Acknowledged messages are removed from the outbox in groups (at most
        ``_ACK_INTERVAL`` seconds apart, and always before the sender waits or ends); a
        process killed in between sends those again, with the same ``webhook-id``.
        Messages claimed but not sent are released.
        """
        acknowledged: list[Claimed] = []
        flushed = time.monotonic()
        left = list(reversed(batch))
        try:
            while left and not self._halt.is_set():
                deadline = self._deadline
                if deadline is not None and time.time() >= deadline:
                    break
                claimed = left.pop()
                outcome = self._send(outbox, client, claimed)
                if outcome is None:  # no longer pending (cancelled meanwhile)
                    continue
                if outcome.kind == "delivered":
                    acknowledged.append(claimed)
                    self._delivered()
                    if time.monotonic() - flushed >= _ACK_INTERVAL:
                        outbox.delivered(acknowledged)
                        acknowledged.clear()
                        flushed = time.monotonic()
                    continue
                self._record(outbox, claimed, outcome)
                if outcome.kind in {"retry", "gone"}:
                    break  # pause (or stop): the rest of the batch waits
        finally:
            outbox.delivered(acknowledged)
            outbox.release(left)

    def _headers(self, msg_id: str, body: str) -> dict[str, str]:
        stamp = int(time.time())
        moment = dt.datetime.fromtimestamp(stamp, dt.timezone.utc)
        signature = " ".join(signer.sign(msg_id, moment, body) for signer in self._signers)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature,
        }

    def _send(self, outbox: Outbox, client: httpx.Client, claimed: Claimed) -> _Outcome | None:
        body = outbox.body(claimed)
        if body is None:
            return None
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return _Outcome("give_up", None, "the stored body is not UTF-8")
        try:
            response = client.post(
                self.endpoint.url, content=body, headers=self._headers(claimed.msg_id, text)
            )
        except httpx.HTTPError as exc:
            return _Outcome("retry", None, _describe(exc))
        except Exception as exc:  # a bug must not end the sender
            logger.exception("webhooks: unexpected error sending %s", claimed.msg_id)
            return _Outcome("retry", None, _describe(exc))
        return classify(response, self.settings.backoff_max)

    def _delivered(self) -> None:
        self.stats.add("delivered")
        if self._failures_in_row:
            logger.info("webhooks: %s accepts deliveries again", self.endpoint.label)
        self._failures_in_row = 0

    def _record(self, outbox: Outbox, claimed: Claimed, outcome: _Outcome) -> None:
        """Store what a failed attempt means: disable, retry later, or give up."""
        label = self.endpoint.label
        attempt = claimed.attempts + 1
        if outcome.kind == "gone":
            cancelled = outbox.disable(self.endpoint.url, outcome.reason)
            self.disabled = True
            self._on_disabled(self.endpoint.url, outcome.reason)
            logger.warning(
                "webhooks: %s answered 410 Gone: endpoint disabled, %d pending message(s) "
                "cancelled; re-enable it with WebhookExtension.enable_endpoint(url)",
                label,
                cancelled,
            )
            return
        if outcome.kind == "retry" and attempt < self.settings.max_attempts:
            self._failures_in_row += 1
            base, cap = self.settings.backoff_base, self.settings.backoff_max
            wait = outcome.wait if outcome.wait is not None else backoff(attempt, base, cap)
            pause = (
                outcome.wait
                if outcome.wait is not None
                else backoff(self._failures_in_row, base, cap)
            )
            now = time.time()
            outbox.retry(claimed, now + wait, outcome.status, outcome.reason)
            self._pause_until = now + pause
            self.stats.add("retried")
            log = logger.warning if self._failures_in_row == 1 else logger.debug
            log(
                "webhooks: delivering %s to %s failed (%s); retrying with backoff",
                claimed.msg_id,
                label,
                outcome.reason,
            )
            return
        reason = outcome.reason
        if outcome.kind == "retry":
            reason = f"gave up after {attempt} attempts; last: {reason}"
        outbox.give_up(claimed, outcome.status, reason)
        self.stats.add("given_up")
        logger.warning(
            "webhooks: gave up delivering %s (%s) to %s: %s",
            claimed.msg_id,
            claimed.event_type,
            label,
            reason,
        )
