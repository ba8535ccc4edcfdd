"""A fake online archive for the fetch tests: stored answers served on a real socket at 127.0.0.1.

The code under test talks to it through astroquery and requests as it would to the real service (the test points
the ``OPENASTRO_*`` server variables at it), so nothing reaches the internet. Importable from any test module
(tests/ is on pytest's pythonpath)::

    with ArchiveServer(answer, {"OPENASTRO_NED_SERVER": "/cgi-bin/objsearch"}) as archive:
        archive.env(monkeypatch)
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlparse

UNREACHABLE = "http://127.0.0.1:9"  # nothing listens: the connection is refused at once

# (path, parameters of the GET query or the POSTed form) -> (body, Content-Type)
Answer = Callable[[str, dict[str, str]], tuple[bytes, str]]


def _params(text: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(text).items()}


class ArchiveServer:
    """Answers GETs and form POSTs with ``answer(path, params)``; keeps every query as ``(path, params)``.

    ``endpoints`` maps each environment variable naming a server to the path it is served at here.
    """

    def __init__(self, answer: Answer, endpoints: dict[str, str]):
        self.queries: list[tuple[str, dict[str, str]]] = []
        self.endpoints = endpoints
        archive = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, path: str, params: dict[str, str]) -> None:
                archive.queries.append((path, params))
                body, kind = answer(path, params)
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802 (http.server's name)
                url = urlparse(self.path)
                self._reply(url.path, _params(url.query))

            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length", 0))
                self._reply(urlparse(self.path).path, _params(self.rfile.read(n).decode()))

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "ArchiveServer":
        # a short poll: shutdown() waits for it at every test's end
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def env(self, monkeypatch, url: str | None = None) -> None:
        """Point the code at this server, or at ``url`` (``UNREACHABLE``: no archive at all)."""
        for name, path in self.endpoints.items():
            monkeypatch.setenv(name, f"{url or self.url}{path}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
