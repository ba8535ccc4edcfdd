"""The live service's background loop: accepted frames -> ingest -> the engine's submit -> finished.

One thread owns every step after the upload, so the registry sees one writer from this service. It wakes on
each upload, waits ``batch_window`` seconds for the rest of a burst, then ingests every accepted frame (through
``ingest.ingest_raws``, the archival ingest: checksum dedup, quarantine with the reason) and hands all newly
ingested exposures to ``engine.submit`` in ONE call, so a burst of 100 uploads plans once, not 100 times.
Processing frames are followed through ``engine.states`` until their quanta are finished. On start it simply
resumes from the inbox: whatever a killed service left ``accepted``, ``ingested`` or ``processing`` is fed
again (ingest and submit are idempotent), so nothing is lost and nothing runs twice.

Without an engine (``openastro-serve`` without ``--pipeline``) frames are ingested and then ``done``.

Use of the engine contract (docs/live.md): ``submit`` once per batch, its answer keyed ``instrument=X,exposure=N``;
before a frame is called done, and for quanta a restarted engine does not know, ``submit`` is asked again (it
is idempotent) so quanta planned later (after a gathering version) are followed too. ``tick`` is not called:
the engine runs due gathering tasks on its own clock.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from ..errors import OpenAstroError
from ..execution.status import DONE
from ..ingest.ingest import RAW, ingest_raws
from ..ingest.overrides import parse_header_fixes
from ..ingest.translator import load_translators
from .inbox import FrameRecord, Inbox

log = logging.getLogger("openastro_parsl.live")

BAD = {"failed", "upstream_failed"}
TERMINAL = set(DONE) | BAD  # a quantum in none of these may still run (or be retried)


class Engine(Protocol):
    """What the loop needs of ``live.engine.LiveEngine`` (the contract in docs/live.md)."""

    def start(self) -> None: ...
    def submit(self, exposures: list[dict]) -> dict[str, list[str]]: ...
    def states(self, quantum_ids: list[str]) -> dict[str, dict]: ...
    def alerts_since(self, since: float) -> list[dict]: ...
    def tick(self) -> None: ...
    def stop(self) -> None: ...


def exposure_key(data_id: dict) -> str:
    """An exposure as ``engine.submit`` keys it: ``instrument=X,exposure=N``."""
    return f"instrument={data_id['instrument']},exposure={data_id['exposure']}"


def _by_exposure(planned: dict[str, list[str]]) -> dict[str, list[str]]:
    """``engine.submit``'s answer re-keyed by ``exposure_key`` whatever the order of the key's dimensions."""
    out = {}
    for key, qids in planned.items():
        parts = dict(kv.split("=", 1) for kv in key.split(","))
        out[exposure_key(parts)] = list(qids)
    return out


def header_fixes(metadata: dict) -> dict[str, Any]:
    """The ``header`` member of a frame's observation metadata as ``ingest --set`` fixes (checked)."""
    cards = metadata.get("header") or {}
    if not isinstance(cards, dict):
        raise OpenAstroError("metadata 'header' must be an object of FITS keyword -> value")
    for key, value in cards.items():
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise OpenAstroError(f"metadata header {key!r}: a value must be a string or a number, not {value!r}")
    return parse_header_fixes(f"{k}={v}" for k, v in cards.items())


class LiveLoop:
    """The thread that ingests, submits and follows the inbox's frames (see the module docstring)."""

    def __init__(self, butler, inbox: Inbox, engine: Engine | None = None, *, raw_run: str = "raw/all",
                 batch_window: float = 0.5, poll: float = 1.0):
        self.butler, self.inbox, self.engine = butler, inbox, engine
        self.raw_run, self.batch_window, self.poll = raw_run, batch_window, poll
        self.engine_state = "none" if engine is None else "starting"
        self.error: str | None = None
        self._wake, self._stop, self._ready = threading.Event(), threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._ready = threading.Event()
        if self.engine is None:
            self._ready.set()
        else:  # Parsl takes seconds to come up: uploads are ingested meanwhile
            threading.Thread(target=self._start_engine, name="live-engine-start", daemon=True).start()
        self._thread = threading.Thread(target=self._run, name="live-loop", daemon=True)
        self._thread.start()

    def _start_engine(self) -> None:
        assert self.engine is not None
        try:
            self.engine.start()
            self.engine_state = "running"
        except Exception as exc:  # the service stays up: uploads are still accepted and ingested
            log.exception("live engine did not start")
            self.engine_state = f"failed to start: {exc}"
            self.error = f"engine: {exc}"
        self._ready.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
                if self.engine_state in ("none", "running", "starting"):
                    self.error = None
            except Exception as exc:
                log.exception("live loop step failed; retrying")
                self.error = str(exc)
            self._wake.wait(self.poll)
            if self._wake.is_set() and not self._stop.is_set():
                time.sleep(self.batch_window)  # let the rest of a burst arrive: one plan for all of it
            self._wake.clear()

    # -- one pass --------------------------------------------------------------------------------------------
    def step(self) -> None:
        """Ingest what was accepted; once the engine is up, submit what was ingested and follow what runs."""
        accepted = self.inbox.pending(("accepted",))
        if accepted:
            translators = load_translators(self.butler.root)
            for frame in accepted:
                self._ingest(frame, translators)
        if not self._ready.is_set():
            return
        if self.engine is not None and self.engine_state != "running":  # it failed to start: ingest only
            return
        self._submit(self.inbox.pending(("ingested",)))
        processing = self.inbox.pending(("processing",))
        if processing and self.engine is not None:
            self._follow(processing)
        # gathering tasks: the engine runs what is due on its own clock (LiveEngine tick_s), not on this loop's

    def _ingest(self, frame: FrameRecord, translators) -> None:
        try:
            fixes = header_fixes(frame.metadata)
            report = ingest_raws(self.butler, [Path(frame.path)], run=self.raw_run, transfer="copy",
                                 translators=translators, header_fixes=fixes or None)
        except OpenAstroError as exc:
            self.inbox.mark(frame.id, "quarantined", message=str(exc))
            log.warning("frame %d (%s): quarantined: %s", frame.id, frame.site, exc)
            return
        if report.quarantined:
            where, reason = report.quarantined[0]
            self.inbox.mark(frame.id, "quarantined", message=reason, path=str(where))
            log.warning("frame %d (%s): quarantined: %s", frame.id, frame.site, reason)
            return
        ref = report.ingested[0] if report.ingested else report.duplicates[0][1]
        if not hasattr(ref, "data_id"):  # a duplicate within the batch names a path: cannot happen for one file
            raise OpenAstroError(f"frame {frame.id}: ingest reported {ref} as its duplicate")
        data_id = {k: ref.data_id[k] for k in ("instrument", "exposure")}
        if ref.name != RAW.name:
            self.inbox.mark(frame.id, "done", exposure=data_id, message=f"{ref.name} frame: ingested, not processed")
            return
        self.inbox.mark(frame.id, "ingested", exposure=data_id,
                        message=None if report.ingested else "already in the repository: not ingested again")
        log.info("frame %d (%s): ingested as %s", frame.id, frame.site, exposure_key(data_id))

    def _submit(self, frames: list[FrameRecord]) -> None:
        if not frames:
            return
        if self.engine is None:
            for f in frames:
                self.inbox.mark(f.id, "done", message=f.message or "ingested (no pipeline: not processed)")
            return
        exposures = [f.exposure for f in frames if f.exposure]
        unique = list({exposure_key(e): e for e in exposures}.values())
        planned = _by_exposure(self.engine.submit(unique))  # one plan for the whole batch
        for f in frames:
            quanta = planned.get(exposure_key(f.exposure), []) if f.exposure else []
            self.inbox.mark(f.id, "processing", quanta=quanta)
        log.info("submitted %d exposure(s): %d quanta", len(unique), sum(len(v) for v in planned.values()))

    def _follow(self, frames: list[FrameRecord]) -> None:
        assert self.engine is not None
        states = self.engine.states(sorted({q for f in frames for q in f.quanta}))
        # quanta this engine does not know (a restarted engine, before their exposure is submitted again)
        unknown = [f for f in frames if any(q not in states for q in f.quanta)]
        finished = [f for f in frames if f not in unknown and all(states[q].get("state") in TERMINAL for q in f.quanta)]
        if not unknown and not finished:
            return
        # before calling a frame finished, ask once more: a gathering version (a new template) may have let the
        # engine plan more of its quanta since (submit is idempotent and plans the whole batch at once)
        ask = {exposure_key(f.exposure): f.exposure for f in unknown + finished if f.exposure}
        fresh = _by_exposure(self.engine.submit(list(ask.values())))
        for f in unknown:
            self.inbox.mark(f.id, "processing", quanta=fresh.get(exposure_key(f.exposure), []) if f.exposure else [])
        for f in finished:
            now = fresh.get(exposure_key(f.exposure), []) if f.exposure else []
            if set(now) - set(f.quanta):
                self.inbox.mark(f.id, "processing", quanta=sorted(set(f.quanta) | set(now)))
                continue
            mine = [states[q]["state"] for q in f.quanta]
            bad = [q for q, s in zip(f.quanta, mine, strict=True) if s in BAD]
            if bad:
                tasks = sorted({states[q].get("task", "?") for q in bad})
                self.inbox.mark(f.id, "failed", message=f"{len(bad)} of {len(mine)} quanta failed ({', '.join(tasks)})")
            else:
                self.inbox.mark(f.id, "done", message=f.message if mine else "no quanta: nothing this frame enables")
