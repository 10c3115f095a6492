"""Webhook test fixtures: a real HTTP receiver on 127.0.0.1 that verifies every delivery with the
reference `standardwebhooks` library (as an integrator's receiver would), endpoints pointed at
it, and a helper that runs the queued q2 delivery messages in this process."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from hooks.models import WebhookEndpoint
from hooks.services import webhook_endpoint_create
from runs.transitions import Actor

ALICE_API = Actor(via="api", label="alice")


@dataclass
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    error: str = ""
    payload: dict | None = None


@dataclass
class Receiver:
    """A webhook receiver. `secret` is what it verifies with; `statuses` are answered in order
    (then `default_status`) to requests that verify; a request that does not verify gets 400."""

    url: str
    secret: str | None = None
    statuses: list[int] = field(default_factory=list)
    default_status: int = 204
    body: bytes = b"ok"
    extra_headers: dict[str, str] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> int:
        verified, error, payload = False, "", None
        try:
            payload = Webhook(self.secret or "whsec_").verify(body, headers)
            verified = True
        except (WebhookVerificationError, ValueError) as exc:
            error = str(exc) or type(exc).__name__
        with self.lock:
            self.requests.append(Received(path, headers, body, verified, error, payload))
            if not verified:
                return 400
            return self.statuses.pop(0) if self.statuses else self.default_status

    @property
    def verified(self) -> list[Received]:
        return [r for r in self.requests if r.verified]


def _handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802  http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            status = receiver.handle(self.path, dict(self.headers.items()), body)
            self.send_response(status)
            for name, value in receiver.extra_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(receiver.body)))
            self.end_headers()
            self.wfile.write(receiver.body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002  the base's signature
            pass  # quiet test output

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(receiver))
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _private_targets_allowed(settings) -> None:
    # The receiver listens on 127.0.0.1; tests of the refusal switch this off themselves.
    settings.SWITCHYARD_WEBHOOKS_ALLOW_PRIVATE = True
    settings.SWITCHYARD_BASE_URL = "https://switchyard.example.com"


@pytest.fixture
def endpoint_for(project, personas) -> Callable[..., WebhookEndpoint]:
    """Create an endpoint of `demo` for the receiver (which then verifies with its secret)."""

    def make(receiver: Receiver, events: list[str] | None = None) -> WebhookEndpoint:
        endpoint, secret = webhook_endpoint_create(
            project=project, url=receiver.url, events=events or [],
            actor=Actor(user=personas["alice"], via="api", label="alice"),
        )
        receiver.secret = secret
        return endpoint

    return make


def queued_deliveries_run() -> list[str]:
    """Run every queued q2 `hooks.tasks.delivery_send` message here, as a worker would, and
    remove it from the queue. Returns what each returned."""
    from django_q.models import OrmQ

    from hooks.tasks import delivery_send

    results = []
    for message in OrmQ.objects.order_by("id"):
        task = message.task
        if task.get("func") != "hooks.tasks.delivery_send":
            continue
        message.delete()
        results.append(delivery_send(*task["args"]))
    return results


def queued_delivery_ids() -> list[int]:
    from django_q.models import OrmQ

    return [m.task["args"][0] for m in OrmQ.objects.order_by("id")
            if m.task.get("func") == "hooks.tasks.delivery_send"]


def body_of(received: Received) -> dict:
    return json.loads(received.body)
