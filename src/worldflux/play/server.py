"""A local web page to play inside a learned world (standard library HTTP server, no framework).

Routes: ``GET /`` the page; ``GET /api/info``; ``POST /api/step`` ``{"action": 0..3}``;
``POST /api/reset`` (a new real game, the learned world starting from its first frame);
``POST /api/sync`` (the learned world restarts from the real game's current frame). Frames
travel as base64 RGBA bytes that the page draws on canvases with ``putImageData``.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from worldflux.core.errors import WorldFluxError
from worldflux.play.page import PAGE
from worldflux.play.session import PlaySession

logger = logging.getLogger(__name__)


def make_server(session: PlaySession, host: str = "127.0.0.1", port: int = 8765
                ) -> ThreadingHTTPServer:
    """An HTTP server bound to ``host:port`` (port 0 picks a free one) serving ``session``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            logger.debug("play: " + format, *args)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, payload: dict[str, Any], status: int = HTTPStatus.OK) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            if self.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
            elif self.path == "/api/info":
                self._json(session.info())
            else:
                self._json({"error": f"no route {self.path}"}, HTTPStatus.NOT_FOUND)

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path == "/api/step":
                    self._json(session.step(int(body.get("action", 0))))
                elif self.path == "/api/reset":
                    self._json(session.reset())
                elif self.path == "/api/sync":
                    self._json(session.sync())
                else:
                    self._json({"error": f"no route {self.path}"}, HTTPStatus.NOT_FOUND)
            except (WorldFluxError, ValueError, TypeError) as exc:
                self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve_in_background(session: PlaySession, host: str = "127.0.0.1", port: int = 0
                        ) -> tuple[ThreadingHTTPServer, str]:
    """Start :func:`make_server` in a daemon thread; returns the server and its URL (tests,
    notebooks). Stop it with ``server.shutdown()``."""
    server = make_server(session, host, port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, f"http://{host}:{server.server_address[1]}/"
