"""An instrument's calibration through time in one band (``zeropointHistory``): one row per exposure, the colour
term, each zero-point at that colour term, the extinction coefficient.

The colour term and ``zp_pooled`` come from the field-level joint fit (``fieldZeropoints``, see ``ubercal``) for
every exposure it calibrated; an exposure it lacks falls back to the per-frame fit re-evaluated at the pooled
colour term (``zp_source`` says which)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from ...pipeline.connections import Connections, Input, Output
from ...pipeline.task import NoWorkFound, PipelineTask, Resources, TaskConfig
from .zeropoint import fit_extinction, pooled_colour_term

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["ZeropointHistoryConfig", "ZeropointHistoryConnections", "ZeropointHistoryTask"]


class ZeropointHistoryConfig(TaskConfig):
    min_airmass_range: float = Field(0.2, ge=0, description="Fit an extinction coefficient only over at least this "
                                                            "range of airmass.")


class ZeropointHistoryConnections(Connections):
    photoCalib = Input("photoCalib", ("instrument", "exposure"), "StructuredData", multiple=True,
                       doc="Every calibrated exposure of the instrument in the band.")
    fieldZeropoints = Input("fieldZeropoints", ("field",), "Table", multiple=True, minimum=0,
                            doc="The joint fits of the fields (every field: an instrument's exposures may span "
                                "several).")
    history = Output("zeropointHistory", ("instrument", "band"), "Table", doc="One row per exposure.")


_HISTORY_COLUMNS = ("exposure", "mjd_mid", "airmass", "exptime", "zp", "zp_err", "colour_term", "colour_term_err",
                    "colour_mean", "scatter", "n_matched", "n_used", "fwhm_pix", "zp_adu")


class ZeropointHistoryTask(PipelineTask):
    """The instrument's calibration through time in one band: one row per exposure, the pooled colour term,
    each zero-point re-evaluated at that pooled colour term, and the extinction coefficient.

    With the field fits (``fieldZeropoints``), ``zp_pooled`` and the colour term are theirs: a camera's hundred
    frames of the same ten stars cannot pin its colour term better than those stars' catalogue errors allow, and
    the joint fit uses every star every camera saw and quotes that error. Without them (or for an exposure they
    lack): each exposure's fit fixes zp - CT * <g-r> best (``colour_mean`` is the weighted mean colour of its
    stars), so its zero-point at the pooled colour term is ``zp + (CT_pooled - CT) * colour_mean``. Feed
    ``colour_term`` from the meta back into calibrate's ``colour_terms`` config to calibrate with it directly.
    """

    dimensions = ("instrument", "band")
    Config = ZeropointHistoryConfig
    Connections = ZeropointHistoryConnections
    resources = Resources(cores=1, memory_mb=256, walltime_min=5)

    def run(self, photoCalib: list[dict], fieldZeropoints: list[Table] | None = None, data_ids=None):
        from astropy.table import Table

        rows = sorted(photoCalib, key=lambda d: (d.get("mjd_mid") or 0.0, d.get("exposure") or 0))
        if not rows:
            raise NoWorkFound("no calibrated exposures")

        def col(name, dtype=float):
            vals = [r.get(name) for r in rows]
            if dtype is float:
                return np.array([np.nan if v is None else float(v) for v in vals])
            return np.array([-1 if v is None else v for v in vals], dtype=dtype)

        table = Table({name: col(name, np.int64 if name in ("exposure", "n_matched", "n_used") else float)
                       for name in _HISTORY_COLUMNS})
        ct, ct_err = table["colour_term"].data, table["colour_term_err"].data
        fitted = np.array([bool(r.get("colour_term_fitted", True)) for r in rows])
        ct_pool, ct_pool_err, n_ct = pooled_colour_term(ct, np.where(fitted, ct_err, np.nan))
        if not np.isfinite(ct_pool):  # nothing fitted a colour term: keep what the exposures held
            ct_pool, ct_pool_err = float(np.nanmedian(ct)), 0.0
        cm = np.nan_to_num(table["colour_mean"].data)
        table["zp_pooled"] = table["zp"] + (ct_pool - ct) * cm
        # the zero-point at the mean colour is what each fit knows; add the pooled CT's error at that colour
        zp_at_mean_err = np.sqrt(np.clip(table["zp_err"] ** 2 - (ct_err * cm) ** 2, 0, None))
        table["zp_pooled_err"] = np.hypot(zp_at_mean_err, ct_pool_err * cm)
        instrument = rows[0].get("instrument")
        band = rows[0].get("band")
        joint = _joint_rows(fieldZeropoints or [], instrument, band)
        found = np.array([int(e) in joint for e in table["exposure"]], dtype=bool)
        table["zp_source"] = np.where(found, "field", "pooled")
        if found.any():
            zj = np.array([joint[int(e)] for e in table["exposure"][found]])
            table["zp_pooled"][found], table["zp_pooled_err"][found] = zj[:, 0], zj[:, 1]
            keys = np.unique(zj[:, 2:4], axis=0)  # one colour term per field: average the fields
            ct_pool = float(np.sum(keys[:, 0] / keys[:, 1] ** 2) / np.sum(1.0 / keys[:, 1] ** 2))
            ct_pool_err = float(np.sqrt(1.0 / np.sum(1.0 / keys[:, 1] ** 2)))
            n_ct = int(found.sum())
        meta = {"instrument": instrument, "band": band, "n_exposures": len(rows), "colour_term": ct_pool,
                "colour_term_err": ct_pool_err, "colour_term_n": n_ct,
                "colour_term_source": "field" if found.any() else "pooled",
                "zp_median": float(np.nanmedian(table["zp_pooled"])),
                "zp_rms": float(np.nanstd(table["zp_pooled"])), "fwhm_median": float(np.nanmedian(table["fwhm_pix"]))}
        ext = fit_extinction(table["airmass"].data, table["zp_pooled"].data, table["zp_pooled_err"].data,
                             self.config.min_airmass_range)
        if ext is not None:
            meta.update({"zp_airmass0": ext[0], "zp_airmass0_err": ext[1], "extinction": ext[2],
                         "extinction_err": ext[3]})
        table.meta.update(meta)
        self.log.info("%s %s: %d exposures (%d from the field fit), CT %.3f +- %.3f, median zp %.3f", instrument,
                      band, len(rows), int(found.sum()), ct_pool, ct_pool_err, meta["zp_median"])
        return {"history": table}


def _joint_rows(tables: list[Table], instrument, band) -> dict[int, tuple[float, float, float, float]]:
    """exposure -> (zp, zp_err, colour term, its error) of this instrument and band from the field fits."""
    out = {}
    for t in tables:
        for r in t:
            if str(r["instrument"]) == str(instrument) and str(r["band"]) == str(band) and np.isfinite(r["zp"]):
                out[int(r["exposure"])] = (float(r["zp"]), float(r["zp_err"]), float(r["colour_term"]),
                                           float(r["colour_term_err"]))
    return out
