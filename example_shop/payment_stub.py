"""A stand-in payment provider speaking a tiny HTTP API, for the demo, the tests and
``make serve``. Run it with ``python -m example_shop.payment_stub --port 8099``.

- ``POST /charges`` with JSON ``{"reference": ..., "amount": "12.50", "currency": "EUR"}``: 201
  ``{"id": "ch_...", "status": "succeeded"}``, or 402 ``{"status": "declined", "reason": ...}``
  when the amount exceeds ``decline_over``. The reference is the idempotency key: charging the
  same reference again returns the first answer and charges nothing more.
- ``GET /charges/<reference>``: 200 with the charge, or 404.
- ``POST /charges/<reference>/refund``: 200 with the charge, now ``refunded`` (again: the same).
- While ``down`` is set every request gets 503, like a provider in maintenance.

>>> with PaymentStub() as stub:
...     stub.url.startswith("http://127.0.0.1:")
True
"""

from __future__ import annotations

import argparse
import json
import threading
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

__all__ = ["PaymentStub"]


class PaymentStub:
    """The provider, served from a background thread on ``host:port`` (0 picks a free port)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, decline_over: Decimal = Decimal(1000)
    ) -> None:
        self.host = host
        self.port = port
        self.decline_over = decline_over
        self.down = False
        self.charges: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        self._server = ThreadingHTTPServer((self.host, self.port), _handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="payment-stub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def succeeded(self) -> list[dict[str, Any]]:
        """The charges that took money, one per reference."""
        with self._lock:
            return [c for c in self.charges.values() if c["status"] == "succeeded"]

    def charge(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        reference = str(body.get("reference") or "")
        try:
            amount = Decimal(str(body["amount"]))
        except (KeyError, InvalidOperation):
            return 400, {"error": "amount must be a decimal string"}
        if not reference:
            return 400, {"error": "reference is required"}
        with self._lock:
            known = self.charges.get(reference)
            if known is None:
                n = len(self.charges) + 1
                if amount > self.decline_over:
                    known = {"id": f"ch_{n:06d}", "reference": reference, "status": "declined"}
                    known["reason"] = f"amount {amount} is over the card limit"
                else:
                    known = {"id": f"ch_{n:06d}", "reference": reference, "status": "succeeded"}
                known["amount"] = str(amount)
                known["currency"] = str(body.get("currency", ""))
                self.charges[reference] = known
        return (201 if known["status"] == "succeeded" else 402), dict(known)

    def refund(self, reference: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            known = self.charges.get(reference)
            if known is None:
                return 404, {"error": f"no charge {reference!r}"}
            if known["status"] == "succeeded":
                known["status"] = "refunded"
            return (200 if known["status"] == "refunded" else 409), dict(known)

    def lookup(self, reference: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            known = self.charges.get(reference)
        return (200, dict(known)) if known else (404, {"error": f"no charge {reference!r}"})


def _handler(stub: PaymentStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # the demo's output stays readable

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _unavailable(self) -> bool:
            with stub._lock:
                stub.requests += 1
            if stub.down:
                self._reply(503, {"error": "payment provider in maintenance"})
            return stub.down

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self._unavailable():
                return
            if self.path.startswith("/charges/") and self.path.endswith("/refund"):
                self._reply(*stub.refund(self.path.split("/")[2]))
                return
            if self.path != "/charges":
                self._reply(404, {"error": f"no route {self.path}"})
                return
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self._reply(400, {"error": "body must be JSON"})
                return
            self._reply(*stub.charge(body))

        def do_GET(self) -> None:
            if self._unavailable():
                return
            if not self.path.startswith("/charges/"):
                self._reply(404, {"error": f"no route {self.path}"})
                return
            self._reply(*stub.lookup(self.path.removeprefix("/charges/")))

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="A stand-in payment provider for example_shop")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--decline-over", type=Decimal, default=Decimal(1000))
    args = parser.parse_args()
    stub = PaymentStub(args.host, args.port, args.decline_over).start()
    print(f"payment stub on {stub.url}; charges over {args.decline_over} are declined")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        stub.stop()


if __name__ == "__main__":
    main()
