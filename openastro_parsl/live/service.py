"""The live HTTP service: telescopes POST frames, observers read states, alerts and the status page.

Starlette (the ASGI toolkit FastAPI is built on) with uvicorn: a small, well-kept pair that streams request
bodies (so the size limit is enforced while reading, not after), parses multipart, and runs the blocking parts
(fsync, FITS checks, the engine) in a thread pool. Routes:

- ``POST /frames``: a FITS file as the body (``X-OpenAstro-Metadata: {json}`` optional) or multipart with a
  ``file`` part and an optional ``metadata`` part; ``Authorization: Bearer TOKEN`` and ``X-OpenAstro-Site``.
  202 accepted (durable: fsynced file + committed row), 200 the same bytes again (the existing id), 401/403
  refused (logged), 413 too large, 400 bad request, 422 not a readable FITS image (quarantined with its reason).
- ``GET /frames/{id}``: the frame's state, data ID, quanta and their states.
- ``GET /alerts?since=UNIX_TIME``: alerts registered in ``live/<name>`` since then.
- ``GET /health`` and ``GET /`` (the status page, ``live/page.py``).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncGenerator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..butler import Butler
from ..errors import OpenAstroError
from ..ingest.ingest import _quarantine, read_header_checked
from . import page
from .inbox import FrameRecord, Inbox
from .loop import Engine, LiveLoop, header_fixes
from .tokens import TokenStore

log = logging.getLogger("openastro_parsl.live")

SITE_HEADER = "x-openastro-site"
METADATA_HEADER = "x-openastro-metadata"
DEFAULT_MAX_BODY = 256 * 1024 * 1024


class TooLarge(Exception):
    """The request body passed the size limit."""


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="openastro-live"'} if status == 401 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _parse_metadata(text: str | bytes | None) -> dict:
    """The observation metadata: a JSON object; its ``header`` member must be valid ``ingest --set`` cards."""
    if text in (None, "", b""):
        return {}
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise OpenAstroError(f"metadata is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise OpenAstroError("metadata must be a JSON object")
    header_fixes(meta)
    return meta


def _fits_problem(path: Path) -> str | None:
    """Why a stored upload is no FITS image (ingest's own check), or None; the rest is ingest's job, later."""
    try:
        read_header_checked(path)
    except OpenAstroError as exc:
        return str(exc)
    return None


def _alert_exposure(alert: dict) -> dict:
    """The exposure an alert came from: its ``data_id``, or its own instrument and exposure fields."""
    return dict(alert.get("data_id") or {k: alert[k] for k in ("instrument", "exposure") if k in alert})


class LiveService:
    """One live service on a repository: inbox, tokens, the background loop and the Starlette app."""

    def __init__(self, repo_root: str | Path, name: str = "default", engine: Engine | None = None, *,
                 max_body: int = DEFAULT_MAX_BODY, raw_run: str | None = None, batch_window: float = 0.5,
                 poll: float = 1.0):
        self.butler = Butler(repo_root)
        self.name, self.engine, self.max_body = name, engine, max_body
        self.inbox = Inbox(self.butler.root, name)
        self.tokens = TokenStore(self.butler.root)
        # raw/all is where the engine looks for raws unless given other inputs (live/engine.py)
        self.raw_run = raw_run or "raw/all"
        self.loop = LiveLoop(self.butler, self.inbox, engine, raw_run=self.raw_run, batch_window=batch_window,
                             poll=poll)
        self.started = time.time()
        self._log_to_file(self.inbox.dir / "service.log")

    @staticmethod
    def _log_to_file(path: Path) -> None:
        target = str(path.resolve())
        if any(getattr(h, "baseFilename", None) == target for h in log.handlers):
            return
        handler = logging.FileHandler(target)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)

    # -- the app ---------------------------------------------------------------------------------------------
    def app(self) -> Starlette:
        @asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncGenerator[None, None]:
            log.info("live service %s on %s: %d frame(s) to resume", self.name, self.butler.root,
                     len(self.inbox.pending(("accepted", "ingested", "processing"))))
            self.loop.start()
            try:
                yield
            finally:
                await run_in_threadpool(self.loop.stop)
                if self.engine is not None:
                    await run_in_threadpool(self.engine.stop)

        return Starlette(routes=[
            Route("/frames", self.post_frame, methods=["POST"]),
            Route("/frames/{frame_id:int}", self.get_frame, methods=["GET"]),
            Route("/alerts", self.get_alerts, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/", self.status_page, methods=["GET"]),
        ], lifespan=lifespan)

    # -- uploads ---------------------------------------------------------------------------------------------
    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body:
            raise TooLarge(f"Content-Length {declared} is over the limit of {self.max_body} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise TooLarge(f"body over the limit of {self.max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _file_and_metadata(self, request: Request, body: bytes) -> tuple[bytes, dict]:
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            return body, _parse_metadata(request.headers.get(METADATA_HEADER))

        async def once() -> AsyncGenerator[bytes, None]:
            yield body
            yield b""

        try:
            form = await MultiPartParser(request.headers, once(), max_files=1, max_fields=4,
                                         max_part_size=self.max_body).parse()
        except MultiPartException as exc:
            raise OpenAstroError(f"multipart body: {exc.message}") from None
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise OpenAstroError("multipart body has no 'file' part (the FITS file)")
        data = await upload.read()
        meta = form.get("metadata")
        if isinstance(meta, UploadFile):
            meta = (await meta.read()).decode("utf-8", "replace")
        return data, _parse_metadata(meta)

    def _refuse(self, request: Request, status: int, reason: str, site: str | None) -> JSONResponse:
        client = request.client.host if request.client else "?"
        log.warning("refused %s %s from %s (site %r): %d %s", request.method, request.url.path, client, site,
                    status, reason)
        return _error(status, reason)

    async def post_frame(self, request: Request) -> Response:
        site = request.headers.get(SITE_HEADER)
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        verdict = await run_in_threadpool(self.tokens.check, site, token)
        if not verdict.ok:
            return self._refuse(request, verdict.status, verdict.reason, site)
        assert site is not None
        try:
            body = await self._read_body(request)
            data, metadata = await self._file_and_metadata(request, body)
        except TooLarge as exc:
            return self._refuse(request, 413, str(exc), site)
        except OpenAstroError as exc:
            return self._refuse(request, 400, str(exc), site)
        if not data:
            return self._refuse(request, 400, "empty upload: send the FITS file as the body or the 'file' part", site)
        frame, new = await run_in_threadpool(self.inbox.accept, data, site, metadata, _fits_problem)
        if new and frame.state == "quarantined":
            frame = await run_in_threadpool(self._quarantine, frame)
        answer = {**frame.as_json(), "duplicate": not new, "url": f"/frames/{frame.id}"}
        if frame.state == "quarantined":
            log.warning("frame %d from site %s quarantined: %s", frame.id, site, frame.message)
            return JSONResponse({**answer, "error": frame.message}, status_code=422)
        if new:
            log.info("frame %d accepted from site %s (%d bytes, sha256 %s)", frame.id, site, len(data),
                     frame.sha256[:12])
            self.loop.wake()
        return JSONResponse(answer, status_code=202 if new else 200)

    def _quarantine(self, frame: FrameRecord) -> FrameRecord:
        """Move a refused upload from the inbox to ``REPO/quarantine`` beside its reason (as ingest does)."""
        where = _quarantine(self.butler.root, Path(frame.path), f"upload from site {frame.site}: {frame.message}")
        self.inbox.mark(frame.id, "quarantined", path=str(where))
        got = self.inbox.get(frame.id)
        assert got is not None
        return got

    # -- reading ---------------------------------------------------------------------------------------------
    def _states(self, quanta: list[str]) -> dict[str, dict]:
        if self.engine is None or not quanta:
            return {}
        return self.engine.states(quanta)

    async def get_frame(self, request: Request) -> Response:
        frame_id = request.path_params["frame_id"]
        frame = await run_in_threadpool(self.inbox.get, frame_id)
        if frame is None:
            return _error(404, f"no frame {frame_id}")
        states = await run_in_threadpool(self._states, frame.quanta)
        quanta = [{"id": q, **states.get(q, {"state": "unknown"})} for q in frame.quanta]
        return JSONResponse({**frame.as_json(), "quanta": quanta})

    async def get_alerts(self, request: Request) -> Response:
        try:
            since = float(request.query_params.get("since", "0"))
        except ValueError:
            return _error(400, f"since={request.query_params.get('since')!r}: expected seconds since 1970 (UTC)")
        alerts = [] if self.engine is None else await run_in_threadpool(self.engine.alerts_since, since)
        return JSONResponse({"since": since, "alerts": alerts})

    async def health(self, request: Request) -> Response:
        counts = await run_in_threadpool(self.inbox.counts)
        queue = sum(counts.get(s, 0) for s in ("accepted", "ingested", "processing"))
        return JSONResponse({"status": "ok" if self.loop.error is None else "degraded", "name": self.name,
                             "engine": self.loop.engine_state, "frames": counts, "queue": queue,
                             "error": self.loop.error, "uptime_s": round(time.time() - self.started, 1)})

    async def status_page(self, request: Request) -> Response:
        try:
            hours = float(request.query_params.get("hours", "6"))
        except ValueError:
            return _error(400, "hours: expected a number")
        html = await run_in_threadpool(self._page_html, hours)
        return HTMLResponse(html)

    def _stamp(self, alert: dict) -> bytes | None:
        """The alert's cutouts PNG: the file the engine names (``stamps``), else its exposure's ``alertStamps``."""
        if alert.get("stamps"):
            try:
                return Path(alert["stamps"]).read_bytes()
            except OSError:
                return None
        try:
            return self.butler.get("alertStamps", _alert_exposure(alert), collections=[f"live/{self.name}"])
        except OpenAstroError:
            return None

    def _page_html(self, hours: float, max_alerts: int = 20) -> str:
        now = time.time()
        frames = self.inbox.since(now - hours * 3600)
        states = self._states(sorted({q for f in frames for q in f.quanta}))
        quanta = Counter(s.get("state", "unknown") for s in states.values())
        alerts = self.engine.alerts_since(now - hours * 3600) if self.engine is not None else []
        shown = alerts[-max_alerts:][::-1]
        stamps: dict[tuple, bytes | None] = {}
        for a in shown:
            key = tuple(sorted(_alert_exposure(a).items()))
            if key and key not in stamps:
                stamps[key] = self._stamp(a)
        pairs = [(a, stamps.get(tuple(sorted(_alert_exposure(a).items())))) for a in shown]
        return page.render(self.name, hours, frames, quanta, self.inbox.counts(), pairs, self.loop.engine_state,
                           now)
