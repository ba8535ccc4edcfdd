"""Plate solving (label ``plateSolve``): a verified WCS for every raw frame, or a ``wcs_failed`` record.

Two engines behind one task, both offline and both matching the frame's sep detections against the local
reference catalogue: Debian's astrometry.net ``solve-field`` (with index files built from that catalogue)
and a built-in quad matcher (numpy/scipy). A header WCS is trusted only once the catalogue confirms it.
Whatever found the solution, the same refit and verification produce ``rms_pix`` and ``n_matched``.

A frame that does not solve is not an error: its ``wcsSolution`` says ``wcs_failed`` and why, and
``calibrate`` then ends that frame ``no_work`` while its neighbours go on.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ...astro.jsonable import finite_or_none, jsonable
from ...astro.refcat import REFCAT_HINT
from ...astro.wcs import pixel_scale_arcsec, wcs_cards
from ...datastore.image import MASK_BITS, Image
from ...pipeline.connections import Connections, Input, Output, PrerequisiteInput
from ...pipeline.task import PipelineTask, Resources, TaskConfig
from . import net as astrometry_net
from .fit import Catalogue, SolveResult, accept, false_alarm_probability, mean_offset, verify
from .quads import QuadSettings, solve_quads
from .sources import Hints, detect_sources, hints_from


class PlateSolveConfig(TaskConfig):
    engine: Literal["auto", "astrometry_net", "builtin"] = Field(
        "auto", description="Solver: astrometry.net's solve-field, the built-in quad matcher, or auto (solve-field "
                            "when it is on PATH, the built-in matcher when it is not or when solve-field fails).")
    trust_header_wcs: bool = Field(
        True, description="Keep a header WCS (status `header`) when enough catalogue stars confirm it; "
                          "false: solve every frame.")
    header_max_shift_pix: float = Field(
        0.2, gt=0, description="A header WCS is kept only if the catalogue stars' mean offset from their detections "
                               "through it (inverse-variance weighted) is below this many pixels.")
    mag_column: str = Field("r", description="Reference-catalogue magnitude column used to pick its brightest stars.")
    use_hints: bool = Field(True, description="Use the pointing (RA/DEC) and pixel scale from ingest records and "
                                              "header as search hints; false solves blind.")
    blind_fallback: bool = Field(True, description="When the search near the pointing hint fails, search the whole "
                                                   "catalogue.")
    search_radius_arcmin: float | None = Field(
        None, gt=0, description="How far the frame centre may lie from the pointing hint (default: one frame "
                                "half-diagonal for the built-in engine, one diagonal for solve-field).")
    scale_tolerance: float = Field(0.15, gt=0, lt=1, description="Fractional uncertainty of the pixel-scale hint.")
    detect_sigma: float = Field(5.0, gt=0, description="sep detection threshold in background sigma.")
    min_area: int = Field(5, ge=1, description="Fewest connected pixels for a detection.")
    max_sources: int = Field(300, ge=4, description="Brightest detections kept for matching and verification.")
    match_radius_pix: float = Field(2.0, gt=0, description="Catalogue-detection match radius for the final fit and "
                                                            "verification (pixels).")
    min_matches: int = Field(6, ge=4, description="Fewest catalogue stars matched for a solution (or a header WCS) "
                                                  "to count.")
    max_rms_pix: float = Field(1.0, gt=0, description="Largest residual RMS (pixels) of a verified solution.")
    max_false_alarm: float = Field(1e-9, gt=0, lt=1, description="Largest probability that the matches happened by "
                                                                 "chance (binomial on the detections' area share).")
    sip_degree: int | None = Field(None, ge=2, le=5, description="Fit SIP distortion of this degree (needs "
                                                                 "enough stars; default TAN only).")
    n_image_stars: int = Field(15, ge=4, le=40, description="Built-in engine: brightest detections hashed into quads.")
    n_catalogue_stars: int = Field(30, ge=4, le=60, description="Built-in engine: brightest catalogue stars per "
                                                                "search region.")
    code_tolerance: float = Field(0.012, gt=0, lt=0.2, description="Built-in engine: quad-code match radius.")
    max_seconds: float = Field(60.0, gt=0, description="Built-in engine: give up after this long.")
    index_cache_dir: str | None = Field(
        None, description="astrometry.net: where index files built from the catalogue are cached (default "
                          "~/.cache/openastro-parsl/astrometry-index; one subdirectory per catalogue checksum).")
    index_jitter_arcsec: float = Field(1.0, gt=0, description="astrometry.net: catalogue position error for the "
                                                              "index (build-astrometry-index -j).")
    cpulimit_s: float = Field(30.0, gt=0, description="astrometry.net: solve-field CPU-time limit per attempt.")
    odds_to_solve: float = Field(1e4, gt=1, description="astrometry.net: solve-field's odds to accept a match "
                                                       "before our verification.")


class PlateSolveConnections(Connections):
    raw = Input("raw", ("instrument", "exposure"), "RawImage", doc="The raw frame (its header WCS may be missing).")
    refcat = PrerequisiteInput("refcat", ("field",), "Table", doc="The field's reference catalogue.", hint=REFCAT_HINT)
    solution = Output("wcsSolution", ("instrument", "exposure"), "StructuredData",
                      doc="status (header / solved / wcs_failed), engine, reason, rms_pix, n_matched, n_sources, "
                          "pixel_scale_arcsec, wcs cards.")


def _describe(data_id: Any) -> str:
    if isinstance(data_id, dict) and data_id:
        return ", ".join(f"{k}={v}" for k, v in data_id.items())
    return "frame"


def _quad_settings(c: PlateSolveConfig) -> QuadSettings:
    return QuadSettings(n_image_stars=c.n_image_stars, n_catalogue_stars=c.n_catalogue_stars,
                        code_tolerance=c.code_tolerance, min_matches=c.min_matches,
                        match_radius_pix=c.match_radius_pix, max_rms_pix=c.max_rms_pix,
                        max_false_alarm=c.max_false_alarm, sip_degree=c.sip_degree,
                        scale_tolerance=c.scale_tolerance, search_radius_arcmin=c.search_radius_arcmin,
                        blind=c.blind_fallback, max_seconds=c.max_seconds)


def _net_settings(c: PlateSolveConfig) -> astrometry_net.NetSettings:
    return astrometry_net.NetSettings(index_cache_dir=c.index_cache_dir, index_jitter_arcsec=c.index_jitter_arcsec,
                                      cpulimit_s=c.cpulimit_s, scale_tolerance=c.scale_tolerance,
                                      search_radius_arcmin=c.search_radius_arcmin, blind=c.blind_fallback,
                                      min_matches=c.min_matches, match_radius_pix=c.match_radius_pix,
                                      max_rms_pix=c.max_rms_pix, max_false_alarm=c.max_false_alarm,
                                      sip_degree=c.sip_degree, odds_to_solve=c.odds_to_solve)


def engines_for(engine: str) -> list[str]:
    """The engines to try, in order, for a config's ``engine``."""
    if engine == "auto":
        return ["astrometry_net", "builtin"] if astrometry_net.available() else ["builtin"]
    return [engine]


def plate_solve(image: Image, refcat, config: PlateSolveConfig | None = None, *,
                records: dict | None = None, what: str = "frame", log=None) -> dict:
    """The ``wcsSolution`` record for one frame (never raises for a frame that merely does not solve)."""
    import logging

    c = config or PlateSolveConfig()
    log = log or logging.getLogger(__name__)
    t0 = time.perf_counter()
    data = np.asarray(image.data)
    if data.ndim != 2 or data.size == 0:
        raise ValueError(f"{what}: raw pixels have shape {data.shape}; plate solving needs a 2-d image")
    cat = Catalogue.from_table(refcat, c.mag_column, what=f"{what}: refcat")
    bad = None
    if image.mask is not None:
        bad = (np.asarray(image.mask).astype(np.int64) & (MASK_BITS["BAD"] | MASK_BITS["NO_DATA"])) != 0
    sources = detect_sources(data, bad, nsigma=c.detect_sigma, minarea=c.min_area, max_sources=c.max_sources)
    hints = hints_from(image.header, records) if c.use_hints else Hints()
    record: dict[str, Any] = {"status": "wcs_failed", "engine": None, "reason": "", "rms_pix": None,
                              "n_matched": 0, "n_sources": int(len(sources)), "pixel_scale_arcsec": None, "wcs": {},
                              "n_catalogue_in_frame": None, "false_alarm_prob": None,
                              "hints": {"ra": hints.ra, "dec": hints.dec, "scale_arcsec": hints.scale_arcsec}}
    notes: list[str] = []

    header_wcs = image.wcs
    if header_wcs is not None:
        if c.trust_header_wcs:
            v = verify(header_wcs, sources, cat, c.match_radius_pix)
            shift = mean_offset(header_wcs, sources, cat, v)
            if accept(v, len(sources), sources.shape, c.match_radius_pix, c.min_matches, c.max_rms_pix,
                      c.max_false_alarm) and shift <= c.header_max_shift_pix:
                record.update(status="header", engine="header",
                              reason=f"header WCS confirmed by {v.n_matched} catalogue stars", **_figures(
                                  header_wcs, v, len(sources), sources.shape, c.match_radius_pix))
                record["elapsed_s"] = round(time.perf_counter() - t0, 4)
                log.info("%s: header WCS confirmed (%d matched, rms %.3f px)", what, v.n_matched, v.rms_pix)
                return record
            notes.append(f"header WCS not confirmed ({v.n_matched} of {v.n_in_frame} catalogue stars matched, "
                         f"mean offset {shift:.2f} px)")
        if c.use_hints:  # a header WCS that failed is still a fine hint of where and how big the frame is
            centre = header_wcs.pixel_to_world_values((data.shape[1] - 1) / 2.0, (data.shape[0] - 1) / 2.0)
            hints = Hints(hints.ra if hints.ra is not None else float(centre[0]),
                          hints.dec if hints.dec is not None else float(centre[1]),
                          hints.scale_arcsec or pixel_scale_arcsec(header_wcs))

    for engine in engines_for(c.engine):
        try:
            if engine == "astrometry_net":
                result = astrometry_net.solve_astrometry_net(sources, cat, hints, _net_settings(c), log=log)
            else:
                result = solve_quads(sources, cat, hints, _quad_settings(c))
        except astrometry_net.AstrometryNetMissing:
            if c.engine == "astrometry_net":
                raise
            notes.append("astrometry_net: solve-field not installed")
            continue
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:  # this frame's failure, not the run's
            notes.append(f"{engine}: {type(exc).__name__}: {exc}")
            log.warning("%s: %s engine failed: %s", what, engine, exc)
            continue
        if result.wcs is not None:
            record.update(status="solved", engine=engine, reason="; ".join(notes + [result.reason]),
                          **_figures(result.wcs, result.verification, len(sources), sources.shape,
                                     c.match_radius_pix))
            record["engine_stats"] = jsonable(result.stats)
            record["elapsed_s"] = round(time.perf_counter() - t0, 4)
            log.info("%s: solved by %s (%d matched, rms %.3f px, %.2f s)", what, engine, result.verification.n_matched,
                     result.verification.rms_pix, record["elapsed_s"])
            return record
        notes.append(f"{engine}: {result.reason}")
        record["engine"] = engine
        record["engine_stats"] = jsonable(result.stats)
    record["reason"] = "; ".join(notes) or "no engine ran"
    record["elapsed_s"] = round(time.perf_counter() - t0, 4)
    log.warning("%s: wcs_failed: %s", what, record["reason"])
    return record


def _figures(wcs, v, n_sources: int, shape, radius: float) -> dict:
    return {"rms_pix": finite_or_none(v.rms_pix), "n_matched": int(v.n_matched), "n_catalogue_in_frame": int(v.n_in_frame),
            "pixel_scale_arcsec": pixel_scale_arcsec(wcs), "wcs": wcs_cards(wcs),
            "false_alarm_prob": float(false_alarm_probability(v, n_sources, shape, radius))}


class PlateSolveTask(PipelineTask):
    """Verify a header WCS or solve the frame against the field's reference catalogue (see module doc)."""

    dimensions = ("instrument", "exposure")
    Config = PlateSolveConfig
    Connections = PlateSolveConnections
    resources = Resources(cores=1, memory_mb=1024, walltime_min=10)

    def run(self, raw: Image, refcat, records=None, data_id=None) -> dict[str, Any]:
        what = _describe(data_id)
        return {"solution": plate_solve(raw, refcat, self.config, records=records, what=what, log=self.log)}


__all__ = ["PlateSolveConfig", "PlateSolveConnections", "PlateSolveTask", "SolveResult", "engines_for", "plate_solve"]
