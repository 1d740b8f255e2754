"""What the local stand-ins for Microsoft's services share: a threaded HTTP server on 127.0.0.1
that a test starts and stops, and a request handler with JSON answers and injected faults."""

from __future__ import annotations

import json
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

Service = TypeVar("Service", bound="LocalService")


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 resets connections when many clients arrive at once


class LocalService:
    """Subclasses set `handler`; its instances reach the service as `self.fake`."""

    handler: type[BaseHTTPRequestHandler]
    thread_name = "fake-service"

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._server: LocalServer | None = None
        self._thread: threading.Thread | None = None

    def start(self: Service) -> Service:
        server = LocalServer(("127.0.0.1", 0), self.handler)
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        # A short poll interval makes stop() quick: shutdown() waits for the loop to notice.
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,),
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes requests held by a "timeout" failure
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self: Service) -> Service:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class JsonHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet tests

    def _hold(self, stopping: threading.Event, seconds: float) -> None:
        """Never answer: hold the request `seconds` (or until the service stops), then close."""
        stopping.wait(seconds)
        self.close_connection = True

    def _reset(self) -> None:
        """Close the connection with a TCP reset (linger 0: close() sends RST instead of FIN)."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _send_json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(payload).encode()
        self._send(status, body, "application/json; charset=utf-8", headers)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store, no-cache")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
