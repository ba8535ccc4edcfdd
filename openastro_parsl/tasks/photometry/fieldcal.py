"""``fieldCalibration``: the joint zero-point and colour-term fit of every frame of a field (``ubercal.fit_field``)
from the catalogue stars ``calibrate`` matched, across instruments and bands.

It reads the ``src`` tables (the stars each frame's own fit could use: ``CALIB_USED`` or ``CALIB_CLIPPED``) and
the field's ``refcat``, and writes ``fieldZeropoints``: one row per exposure with the zero-point (the survey's
e-/s definition, at g-r = 0) and its error, which includes the colour term's. ``zeropointHistory`` reports those
as ``zp_pooled``; the per-frame ``photoCalib`` fits are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field, field_validator

from ...astro.refcat import REFCAT_HINT
from ...pipeline.connections import Connections, Input, Output, PrerequisiteInput
from ...pipeline.task import NoWorkFound, PipelineTask, Resources, TaskConfig
from .extraction import MAG_PER_FRAC, SOURCE_FLAGS
from .ubercal import FieldFit, fit_field

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["FieldCalibrationConfig", "FieldCalibrationConnections", "FieldCalibrationTask", "FieldMeasurements",
           "colour_term_priors", "field_measurements"]

_CALIB_STARS = SOURCE_FLAGS["CALIB_USED"] | SOURCE_FLAGS["CALIB_CLIPPED"]
_META = ("instrument", "band", "exposure", "exptime", "gain")


@dataclass
class FieldMeasurements:
    """The arrays ``fit_field`` takes, and what their indices mean."""

    frame: np.ndarray
    star: np.ndarray
    inst_mag: np.ndarray
    inst_err: np.ndarray
    frame_group: np.ndarray
    frame_column: np.ndarray
    cat_mag: np.ndarray
    cat_err: np.ndarray
    blue: int
    red: int
    frames: list[tuple[str, int, str]]  # (instrument, exposure, band) per frame index
    groups: list[tuple[str, str]]  # (instrument, band) per group index
    star_ids: np.ndarray  # refcat id per star index
    colour_index: str = "g-r"  # the catalogue colour the fit used (blue-red)


def _colour_of(srcs: list[Table], names: list[str]) -> tuple[str, str]:
    """The colour index calibrate used (each src's ``colour_index``, e.g. ``BP-RP``); g-r for tables without it."""
    used = {str(t.meta["colour_index"]): n for n, t in zip(names, srcs, strict=True) if t.meta.get("colour_index")}
    if len(used) > 1:
        raise ValueError(f"fieldCalibration: the frames were calibrated with different colour indices "
                         f"({', '.join(f'{k} ({n})' for k, n in used.items())}); set config colour")
    blue, sep, red = next(iter(used), "g-r").partition("-")
    return (blue, red) if sep else ("g", "r")


def field_measurements(srcs: list[Table], refcat: Table, *, colour: tuple[str, str] | None = None,
                       band_map: dict[str, str] | None = None, names: list[str] | None = None) -> FieldMeasurements:
    """Collect every calibration star of every frame; ``ValueError`` naming the frame for a malformed table.

    Without ``colour`` / ``band_map`` each frame is fitted against the catalogue columns calibrate used for it
    (the src table's ``colour_index`` and ``refcat_band``), so the mapping is configured once, on calibrate.
    """
    names = names if names and len(names) == len(srcs) else [f"src #{i}" for i in range(len(srcs))]
    blue_col, red_col = colour if colour is not None else _colour_of(srcs, names)
    columns = [blue_col, red_col]
    for col in columns:
        for c in (col, f"{col}_err"):
            if c not in refcat.colnames:
                raise ValueError(f"refcat lacks column {c!r} (columns: {', '.join(refcat.colnames)})")
    row_of = {int(i): k for k, i in enumerate(np.asarray(refcat["id"]))}
    per_frame, frames = [], []
    for name, t in zip(names, srcs, strict=True):
        missing = [k for k in _META if t.meta.get(k) is None] + [c for c in ("refcat_id", "flux", "flux_err", "flags")
                                                                 if c not in t.colnames]
        if missing:
            raise ValueError(f"fieldCalibration {name}: src lacks {', '.join(missing)}")
        band = str(t.meta["band"])
        if band_map is not None:
            col = band_map.get(band, band)
        else:
            col = str(t.meta.get("refcat_band") or _DEFAULT_BAND_MAP.get(band, band))
        if col not in refcat.colnames or f"{col}_err" not in refcat.colnames:
            raise ValueError(f"fieldCalibration {name}: band {band!r} has no refcat column {col!r} with errors "
                             f"{col}_err; map it with config band_map")
        if col not in columns:
            columns.append(col)
        ref = np.asarray(t["refcat_id"], dtype=np.int64)
        flux, ferr = np.asarray(t["flux"], float), np.asarray(t["flux_err"], float)
        keep = (ref >= 0) & ((np.asarray(t["flags"]) & _CALIB_STARS) != 0) & (flux > 0) & np.isfinite(ferr)
        unknown = [int(r) for r in ref[keep] if int(r) not in row_of]
        if unknown:
            raise ValueError(f"fieldCalibration {name}: refcat_id {unknown[0]} is not in the field's refcat")
        if not keep.any():
            continue
        inst = -2.5 * np.log10(flux[keep] * float(t.meta["gain"]) / float(t.meta["exptime"]))
        per_frame.append((ref[keep], inst, MAG_PER_FRAC * ferr[keep] / flux[keep], col))
        frames.append((str(t.meta["instrument"]), int(t.meta["exposure"]), band))
    if not frames:
        raise NoWorkFound("no frame of the field has a calibration star")
    ids = np.unique(np.concatenate([p[0] for p in per_frame]))
    star_of = {int(s): k for k, s in enumerate(ids)}
    rows = np.array([row_of[int(s)] for s in ids])
    cat = np.column_stack([np.asarray(np.ma.filled(np.ma.asarray(refcat[c], dtype=float), np.nan))[rows]
                           for c in columns])
    err = np.column_stack([np.asarray(np.ma.filled(np.ma.asarray(refcat[f"{c}_err"], dtype=float), np.nan))[rows]
                           for c in columns])
    groups = sorted({(i, b) for i, _, b in frames})
    group_of = {g: k for k, g in enumerate(groups)}
    return FieldMeasurements(
        frame=np.concatenate([np.full(len(p[0]), f) for f, p in enumerate(per_frame)]),
        star=np.concatenate([[star_of[int(s)] for s in p[0]] for p in per_frame]).astype(int),
        inst_mag=np.concatenate([p[1] for p in per_frame]), inst_err=np.concatenate([p[2] for p in per_frame]),
        frame_group=np.array([group_of[(i, b)] for i, _, b in frames]),
        frame_column=np.array([columns.index(p[3]) for p in per_frame]), cat_mag=cat, cat_err=err,
        blue=0, red=1, frames=frames, groups=groups, star_ids=ids,
        colour_index=f"{blue_col}-{red_col}")


_DEFAULT_BAND_MAP = {"clear": "r"}  # calibrate's default, for src tables that do not say what they used


class FieldCalibrationConfig(TaskConfig):
    colour: tuple[str, str] | None = Field(None, description="Catalogue columns whose difference is the colour "
                                                             "index (default: those calibrate used).")
    band_map: dict[str, str] | None = Field(None, description="Band -> refcat magnitude column (default: the column "
                                                              "calibrate used for each frame).")
    error_floor_mag: float = Field(0.005, ge=0, description="Added in quadrature to each measurement's error.")
    colour_term_prior: float = Field(1.0, gt=0, description="Width of the N(0, .) prior on each colour term not in "
                                                            "colour_terms: only keeps a camera whose stars span no "
                                                            "colour solvable.")
    colour_terms: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="Known transformation coefficients, INSTRUMENT/BAND -> [colour term, its "
                                          "error], e.g. from a standard field (openastro-butler colour-terms): each "
                                          "becomes a N(value, error) prior in place of colour_term_prior.")
    colour_terms_index: str = Field("g-r", description="The catalogue colour colour_terms were measured against; "
                                                       "a field fitted with another is refused.")
    clip_sigma: float = Field(4.0, gt=0, description="Measurements beyond this many sigma are dropped ...")
    min_clip_mag: float = Field(0.05, ge=0, description="... unless their residual is below this (mag).")
    star_scatter: bool = Field(True, description="Add each star's excess scatter through the frames (a transit "
                                                 "host, an unflagged variable) to its measurements' errors.")

    @field_validator("colour_terms")
    @classmethod
    def _group_keys(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for key, (ct, err) in value.items():
            inst, sep, band = key.partition("/")
            if not (inst and sep and band) or "/" in band:
                raise ValueError(f"colour_terms key {key!r} is not INSTRUMENT/BAND")
            if not (np.isfinite(ct) and np.isfinite(err) and err > 0):
                raise ValueError(f"colour_terms {key}: needs a finite value and a positive error, got [{ct}, {err}]")
        return value


def colour_term_priors(groups: list[tuple[str, str]], colour_index: str, known: dict[str, tuple[float, float]],
                       known_index: str, default_sigma: float) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per group: the prior mean and width on its colour term, and the groups a known coefficient pinned."""
    if known and known_index != colour_index:
        raise ValueError(f"fieldCalibration: colour_terms were measured against {known_index}, but this field is "
                         f"fitted with {colour_index}; give coefficients for {colour_index} or set config colour")
    mean, sigma, pinned = np.zeros(len(groups)), np.full(len(groups), default_sigma), []
    for k, (inst, band) in enumerate(groups):
        if f"{inst}/{band}" in known:
            mean[k], sigma[k] = known[f"{inst}/{band}"]
            pinned.append(f"{inst}/{band}")
    return mean, sigma, pinned


class FieldCalibrationConnections(Connections):
    src = Input("src", ("instrument", "exposure"), "Table", multiple=True,
                doc="Every calibrated frame of the field, with its matched catalogue stars.")
    refcat = PrerequisiteInput("refcat", ("field",), "Table", doc="The field's reference catalogue.", hint=REFCAT_HINT)
    zeropoints = Output("fieldZeropoints", ("field",), "Table", doc="One row per exposure: the joint zero-point.")


class FieldCalibrationTask(PipelineTask):
    """All frames of a field calibrated together: per-frame zero-points, per instrument x band colour terms and
    per-star magnitudes in one fit tied to the catalogue (see ``ubercal``)."""

    dimensions = ("field",)
    Config = FieldCalibrationConfig
    Connections = FieldCalibrationConnections
    resources = Resources(cores=1, memory_mb=1024, walltime_min=10)

    def run(self, src: list[Table], refcat: Table, data_ids=None, data_id=None):
        c = self.config
        field = (data_id or {}).get("field")
        names = [f"src {dict(d)}" for d in (data_ids or {}).get("src", [])] or None
        m = field_measurements(src, refcat, colour=c.colour, band_map=c.band_map, names=names)
        ct_mean, ct_sigma, pinned = colour_term_priors(m.groups, m.colour_index, c.colour_terms,
                                                       c.colour_terms_index, c.colour_term_prior)
        fit = fit_field(m.frame, m.star, m.inst_mag, m.inst_err, frame_group=m.frame_group,
                        frame_column=m.frame_column, cat_mag=m.cat_mag, cat_err=m.cat_err, blue=m.blue, red=m.red,
                        floor=c.error_floor_mag, ct_prior_mean=ct_mean, ct_prior_sigma=ct_sigma,
                        clip_sigma=c.clip_sigma, min_clip_mag=c.min_clip_mag, star_scatter=c.star_scatter)
        table = _table(m, fit)
        table.meta.update({
            "field": field, "n_frames": len(m.frames), "n_stars": len(m.star_ids), "n_measurements": len(m.frame),
            "n_used": int(fit.used.sum()), "chi2_red": fit.chi2_red, "colour_index": m.colour_index,
            "colour_terms": {f"{i}/{b}": [float(fit.colour_term[k]), float(fit.colour_term_err[k])]
                             for k, (i, b) in enumerate(m.groups)},
            "colour_terms_known": pinned,
            "zp_definition": "counts_e = exptime * 10**(-0.4*(m + colour_term*(g-r) - zp))",
        })
        for k, (i, b) in enumerate(m.groups):
            self.log.info("field %s: %s %s CT %.3f +- %.3f%s", field, i, b, fit.colour_term[k], fit.colour_term_err[k],
                          f" (known: {ct_mean[k]:.3f} +- {ct_sigma[k]:.3f})" if f"{i}/{b}" in pinned else "")
        self.log.info("field %s: %d frames, %d stars, %d of %d measurements used, reduced chi2 %.2f", field,
                      len(m.frames), len(m.star_ids), int(fit.used.sum()), len(m.frame), fit.chi2_red)
        return {"zeropoints": table}


def _table(m: FieldMeasurements, fit: FieldFit) -> Table:
    from astropy.table import Table

    order = sorted(range(len(m.frames)), key=lambda f: (m.frames[f][0], m.frames[f][1]))
    n_stars = np.array([len(np.unique(m.star[(m.frame == f) & fit.used])) for f in range(len(m.frames))])
    return Table({
        "instrument": [m.frames[f][0] for f in order], "exposure": np.array([m.frames[f][1] for f in order]),
        "band": [m.frames[f][2] for f in order], "zp": fit.zp[order], "zp_err": fit.zp_err[order],
        "colour_term": fit.colour_term[m.frame_group[order]],
        "colour_term_err": fit.colour_term_err[m.frame_group[order]],
        "n_used": fit.n_used_frame[order], "n_stars": n_stars[order],
    })
