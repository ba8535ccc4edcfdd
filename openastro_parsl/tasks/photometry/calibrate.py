"""Photometric calibration: sep extraction, catalogue cross-match, sigma-clipped zero-point + colour term.

The zero-point follows the survey's photometric model (``truth.json`` ``photometry_model``):

    counts_e = exptime * 10**(-0.4 * (m + colour_term * (g - r) - zp))

so ``zp`` is the magnitude of a star of colour g-r = 0 that gives 1 e-/s through this frame's atmosphere,
comparable between cameras with different gains and exposure times. ``zp_adu`` = zp + 2.5 log10(exptime /
gain) is the same calibration for the frame's own pixel values (mag = zp_adu - 2.5 log10(flux_ADU) - CT (g-r));
it is what the calexp header's ``PHOTZP`` holds, because a header describes its own pixels.

The src table's ``mag`` is in the instrument's natural system, ``zp - 2.5 log10(flux_e / exptime)`` (no colour
term; ``mag_err`` the measurement error alone), so a light curve applies the colour term with its target's own
catalogue colour and adds ``zp_err`` once. ``mag_cal = mag - colour_term * colour`` is the standard magnitude
with the matched catalogue colour (the calibrators' median colour for unmatched sources, flagged NO_COLOUR),
``mag_cal_err`` including ``zp_err``.

The kernels are plain functions in the sibling modules (testable on any array); ``CalibrateTask`` is a thin
wrapper that reads the observation info from the header, calls them, and packages the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from ...astro.jsonable import finite_or_none
from ...astro.observation import ObservationInfo, observation_info
from ...astro.refcat import REFCAT_HINT
from ...astro.wcs import pixel_scale_arcsec, wcs_from_cards
from ...datastore.image import Image
from ...pipeline.connections import Connections, Input, Output, PrerequisiteInput
from ...pipeline.task import NoWorkFound, PipelineTask, Resources, TaskConfig
from .extraction import MAG_PER_FRAC, SOURCE_FLAGS, UNFIT_FLAGS, Extraction, extract_sources
from .matching import crowded_references, match_catalogue
from .zeropoint import ZeropointFit, fit_zeropoint

if TYPE_CHECKING:
    from astropy.table import Table
    from astropy.wcs import WCS

__all__ = ["CalibrateConfig", "CalibrateConnections", "CalibrateTask", "Calibration", "calibrate_frame",
           "solution_wcs"]


def solution_wcs(raw: Image, solution: dict, where: str = "") -> tuple[WCS, str]:
    """The WCS a frame is calibrated with, from its ``wcsSolution``; ``NoWorkFound`` when it failed to solve."""
    prefix = f"{where}: " if where else ""
    status = (solution or {}).get("status")
    if status == "wcs_failed":
        raise NoWorkFound(f"{prefix}plate solve failed: {solution.get('reason') or 'no reason given'}")
    cards = solution.get("wcs") or {}
    if cards:
        wcs = wcs_from_cards(cards)
    elif status == "header":
        wcs = raw.wcs
    else:
        wcs = None
    if status not in ("header", "solved") or wcs is None or not wcs.has_celestial:
        raise ValueError(f"{prefix}wcsSolution has status {status!r} and no usable WCS cards")
    return wcs, status


def _column(table: Table, name: str) -> np.ndarray:
    return np.asarray(np.ma.filled(np.ma.asarray(table[name], dtype=float), np.nan), dtype=float)


@dataclass
class Calibration:
    """Everything ``calibrate`` learned about one frame (the task packages it into its three outputs)."""

    obs: ObservationInfo
    extraction: Extraction
    fit: ZeropointFit
    src: Table
    n_matched: int
    refcat_band: str
    zp_adu: float
    pixel_scale: float


def calibrate_frame(data: np.ndarray, obs: ObservationInfo, wcs: WCS, refcat: Table, config: "CalibrateConfig",
                    where: str = "") -> Calibration:
    """Extract, match and fit one frame; ``NoWorkFound`` when too few catalogue stars are usable."""
    from astropy.table import Table

    prefix = f"{where}: " if where else ""
    c = config
    band_col = c.band_map.get(obs.band, obs.band)
    blue, red = c.colour
    missing = [k for k in ("ra", "dec", band_col, f"{band_col}_err", blue, red) if k not in refcat.colnames]
    if band_col not in refcat.colnames:
        raise NoWorkFound(f"{prefix}band {obs.band!r} has no reference magnitude column {band_col!r} in refcat "
                          f"(columns: {', '.join(refcat.colnames)}); map it with config band_map")
    if missing:
        raise ValueError(f"{prefix}refcat lacks column(s) {', '.join(missing)}")
    ex = extract_sources(data, gain=obs.gain, read_noise=obs.read_noise, saturation=obs.saturation_adu,
                         thresh=c.detect_sigma, minarea=c.min_area, deblend_cont=c.deblend_cont,
                         box=c.background_box, edge_px=c.edge_px, aperture_fwhm=c.aperture_fwhm,
                         apcorr_fwhm=c.apcorr_fwhm, apcorr_model_error=c.apcorr_model_error,
                         crowded_fraction=c.crowded_fraction)
    t = ex.table
    n = len(t)
    scale = pixel_scale_arcsec(wcs)
    radius = max(c.match_radius_arcsec / scale, c.match_radius_pix)
    x, y = np.asarray(t["x"]), np.asarray(t["y"])
    idx, cx, cy = match_catalogue(x, y, refcat, wcs, radius_pix=radius)
    mags = _column(refcat, band_col)
    mag_err = _column(refcat, f"{band_col}_err")
    colour_cat = _column(refcat, blue) - _column(refcat, red)
    colour_err = np.hypot(_column(refcat, f"{blue}_err"), _column(refcat, f"{red}_err")) \
        if f"{blue}_err" in refcat.colnames and f"{red}_err" in refcat.colnames else np.zeros(len(refcat))
    flags = np.asarray(t["flags"]).copy()
    m = idx >= 0
    if not m.any():
        raise NoWorkFound(f"{prefix}only 0 usable catalogue stars (none of {n} detected sources matched "
                          f"{len(refcat)} catalogue stars within {radius:.1f} px)")
    crowd = crowded_references(cx, cy, mags, ex.aperture_radius + c.crowding_radius_fwhm * ex.fwhm_pix,
                               c.crowding_delta_mag)
    flags[m & crowd[np.where(m, idx, 0)]] |= SOURCE_FLAGS["REF_CROWDED"]
    if c.exclude_variables and "variable" in refcat.colnames:
        known = np.asarray(refcat["variable"], dtype=bool)
        flags[m & known[np.where(m, idx, 0)]] |= SOURCE_FLAGS["REF_VARIABLE"]
    flux, flux_err = np.asarray(t["flux"]), np.asarray(t["flux_err"])
    with np.errstate(divide="ignore", invalid="ignore"):
        inst = -2.5 * np.log10(flux * obs.gain / obs.exptime)
        frac = flux_err / flux
    j = np.where(m, idx, 0)
    ycal = np.where(m, mags[j] - inst, np.nan)
    col = np.where(m, colour_cat[j], np.nan)
    prior = (c.colour_terms.get(obs.instrument) or {}).get(obs.band)
    ct_scale = 0.0 if prior is None else prior
    sigma = np.sqrt((MAG_PER_FRAC * frac) ** 2 + mag_err[j] ** 2 + (ct_scale * colour_err[j]) ** 2)
    eligible = m & ((flags & UNFIT_FLAGS) == 0) & (np.asarray(t["snr"]) >= c.min_snr_calib) & np.isfinite(ycal) \
        & np.isfinite(col) & np.isfinite(sigma)
    if eligible.sum() < c.min_calib_stars:
        raise NoWorkFound(f"{prefix}only {int(eligible.sum())} usable catalogue stars (of {int(m.sum())} matched, "
                          f"{n} detected); need {c.min_calib_stars}")
    fit = fit_zeropoint(np.where(eligible, ycal, np.nan), col, sigma,
                        fit_colour=c.fit_colour_term,
                        colour_term=prior if prior is not None else 0.0,
                        colour_term_sigma=c.colour_term_sigma if prior is not None else c.free_colour_term_sigma,
                        clip_sigma=c.clip_sigma, max_scale=c.clip_max_scale, min_clip_mag=c.min_clip_mag,
                        min_colour_span=c.min_colour_span, floor=c.error_floor_mag)
    flags[fit.used] |= SOURCE_FLAGS["CALIB_USED"]
    flags[eligible & ~fit.used] |= SOURCE_FLAGS["CALIB_CLIPPED"]
    zp_adu = fit.zp + 2.5 * np.log10(obs.exptime / obs.gain)
    median_colour = float(np.median(col[fit.used])) if fit.n_used else float(np.nanmedian(colour_cat))
    colour = np.where(m & np.isfinite(col), col, median_colour)
    flags[~(m & np.isfinite(col))] |= SOURCE_FLAGS["NO_COLOUR"]
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(flux > 0, zp_adu - 2.5 * np.log10(flux), np.nan)  # natural system (at g-r = 0)
        magerr = np.where(flux > 0, MAG_PER_FRAC * frac, np.nan)
    ra, dec = wcs.all_pix2world(x, y, 0) if n else (np.zeros(0), np.zeros(0))
    ref_id = np.where(m, np.asarray(refcat["id"])[j] if len(refcat) else -1, -1).astype(np.int64)
    src = Table({
        "x": x, "y": y, "ra": np.asarray(ra, float), "dec": np.asarray(dec, float),
        "flux": flux, "flux_err": flux_err, "snr": np.asarray(t["snr"]), "fwhm": np.asarray(t["fwhm"]),
        "flags": flags.astype(np.int32), "mag": mag, "mag_err": magerr, "refcat_id": ref_id,
        "colour": colour, "mag_cal": mag - fit.colour_term * colour, "mag_cal_err": np.hypot(magerr, fit.zp_err),
        "calib_resid": np.where(eligible, fit.residuals, np.nan),
        "a": np.asarray(t["a"]), "b": np.asarray(t["b"]), "theta": np.asarray(t["theta"]),
        "npix": np.asarray(t["npix"]), "peak": np.asarray(t["peak"]), "flux_aper": np.asarray(t["flux_aper"]),
    })
    return Calibration(obs, ex, fit, src, int(m.sum()), band_col, float(zp_adu), scale)


class CalibrateConfig(TaskConfig):
    detect_sigma: float = Field(3.0, gt=0, description="Detection threshold in units of the sky noise (sep).")
    min_area: int = Field(5, ge=1, description="Fewest connected pixels above threshold for a detection.")
    deblend_cont: float = Field(0.005, gt=0, le=1, description="sep deblending contrast (1.0 disables deblending).")
    background_box: int = Field(64, ge=8, description="Background mesh size (pixels); sources are masked before "
                                                       "the final background.")
    crowded_fraction: float | None = Field(0.25, gt=0, le=1, description="A frame whose source masks cover more "
                                           "than this fraction of its pixels takes its sky from the image with its "
                                           "stars' PSF model subtracted (crowded fields); null: never.")
    edge_px: int = Field(2, ge=0, description="Width of the EDGE-masked border; apertures reaching it are "
                                               "flagged EDGE.")
    aperture_fwhm: float = Field(2.0, gt=0, description="Photometry aperture radius in units of the frame's FWHM.")
    apcorr_fwhm: float = Field(4.0, gt=0, description="Radius (FWHM) of the large aperture of the curve of growth; "
                                                       "the PSF model supplies the light beyond it.")
    apcorr_model_error: float = Field(0.0025, ge=0, description="Error (fraction) given the PSF model's aperture "
                                                                "correction when averaging it with the curve of "
                                                                "growth's (0: the curve of growth alone).")
    match_radius_arcsec: float = Field(2.0, gt=0, description="Cross-match radius on the sky ...")
    match_radius_pix: float = Field(1.5, gt=0, description="... or in pixels, whichever is larger.")
    crowding_radius_fwhm: float = Field(2.0, ge=0, description="A catalogue neighbour within aperture radius + this "
                                                               "many FWHM ...")
    crowding_delta_mag: float = Field(4.0, ge=0, description="... and less than this many magnitudes fainter keeps "
                                                             "a star out of the fit (REF_CROWDED).")
    min_snr_calib: float = Field(5.0, ge=0, description="Faintest aperture SNR used in the zero-point fit.")
    min_calib_stars: int = Field(3, ge=2, description="Fewer usable catalogue stars: the frame ends no_work.")
    band_map: dict[str, str] = Field(default_factory=lambda: {"clear": "r"},
                                     description="Band -> refcat magnitude column, for bands the catalogue lacks "
                                                 "(an unfiltered frame calibrates against r with a colour term).")
    colour: tuple[str, str] = Field(("g", "r"), description="Catalogue columns whose difference is the colour index.")
    fit_colour_term: bool = Field(True, description="Fit the colour term per exposure (else hold it at the "
                                                    "instrument's known value, or 0).")
    colour_terms: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Known colour terms {instrument: {band: CT}}, e.g. from zeropointHistory's "
                                          "pooled value; used as a Gaussian prior of width colour_term_sigma.")
    colour_term_sigma: float = Field(0.01, gt=0, description="Prior width on a known colour term.")
    free_colour_term_sigma: float | None = Field(
        None, gt=0, description="Prior width around 0 for instruments without a known colour term (None: free fit).")
    min_colour_span: float = Field(0.3, ge=0, description="A free colour term needs this spread of g-r among the "
                                                          "used stars, else it is held at 0.")
    clip_sigma: float = Field(3.0, gt=0, description="Sigma-clipping threshold of the fit.")
    clip_max_scale: float = Field(1.5, ge=1, description="Largest factor the residuals' robust spread may widen "
                                                         "the clipping threshold by.")
    min_clip_mag: float = Field(0.05, ge=0, description="Residuals below this (mag) are never clipped.")
    exclude_variables: bool = Field(True, description="Keep catalogue stars flagged `variable` out of the fit "
                                                      "(a 0.05-mag pulsator among ten stars is not clipped).")
    error_floor_mag: float = Field(0.005, ge=0, description="Added in quadrature to each star's error in the fit.")
    default_gain: float | None = Field(None, gt=0, description="Gain (e-/ADU) for headers without one.")
    default_read_noise: float | None = Field(None, ge=0, description="Read noise (e-) for headers without one.")
    default_saturation: float | None = Field(None, gt=0, description="Saturation (ADU) for headers without one.")
    default_site_elev: float | None = Field(0.0, description="Site elevation (m) for headers without one (BJD moves "
                                                             "by ~3 ns per km of it); None leaves it unknown.")


class CalibrateConnections(Connections):
    raw = Input("raw", ("instrument", "exposure"), "RawImage", doc="The raw frame (ADU).")
    wcsSolution = Input("wcsSolution", ("instrument", "exposure"), "StructuredData",
                        doc="The plate solution (status header / solved / wcs_failed, WCS cards).")
    refcat = PrerequisiteInput("refcat", ("field",), "Table", doc="The field's reference catalogue.", hint=REFCAT_HINT)
    calexp = Output("calexp", ("instrument", "exposure"), "Image",
                    doc="Raw pixels with the solved WCS, MASK and VARIANCE planes and the calibration in the header.")
    src = Output("src", ("instrument", "exposure"), "Table", doc="Calibrated sources.")
    photoCalib = Output("photoCalib", ("instrument", "exposure"), "StructuredData",
                        doc="Zero-point, colour term and what they rest on.")


_SCALING_KEYS = ("BZERO", "BSCALE", "BLANK")


class CalibrateTask(PipelineTask):
    """sep extraction, cross-match with the reference catalogue, sigma-clipped zero-point + colour term."""

    dimensions = ("instrument", "exposure")
    Config = CalibrateConfig
    Connections = CalibrateConnections
    resources = Resources(cores=1, memory_mb=1024, walltime_min=10)

    def run(self, raw: Image, wcsSolution: dict, refcat: Table, data_id=None):
        c = self.config
        where = "calibrate " + (", ".join(f"{k}={v}" for k, v in dict(data_id).items()) if data_id else "frame")
        wcs, status = solution_wcs(raw, wcsSolution, where)
        obs = observation_info(raw.header, default_gain=c.default_gain, default_read_noise=c.default_read_noise,
                               default_saturation=c.default_saturation, default_site_elev=c.default_site_elev,
                               data=raw.data, where=where)
        cal = calibrate_frame(np.asarray(raw.data), obs, wcs, refcat, c, where)
        fit, ex = cal.fit, cal.extraction
        self.log.info("%s: zp %.4f +- %.4f, CT %.3f +- %.3f, %d/%d stars, scatter %.3f, FWHM %.2f px",
                      where, fit.zp, fit.zp_err, fit.colour_term, fit.colour_term_err, fit.n_used, cal.n_matched,
                      fit.scatter, ex.fwhm_pix)
        calexp = self._calexp(raw, wcs, cal)
        src = cal.src
        src.meta.update({
            "mjd_mid": obs.mjd_mid, "exptime": obs.exptime, "band": obs.band, "instrument": obs.instrument,
            "exposure": obs.exposure, "site_lat": obs.site_lat, "site_lon": obs.site_lon, "site_elev": obs.site_elev,
            "zp": fit.zp, "zp_err": fit.zp_err, "colour_term": fit.colour_term, "zp_adu": cal.zp_adu,
            "gain": obs.gain, "flux_unit": "adu", "pixel_origin": 0, "colour_index": "-".join(c.colour),
            "refcat_band": cal.refcat_band,  # the catalogue column calibrated against (fieldCalibration reads it)
            "flags": dict(SOURCE_FLAGS), "assumed": list(obs.assumed),
            "mag_system": "mag = zp - 2.5 log10(flux*gain/exptime) (natural, no colour term); "
                          "mag_cal = mag - colour_term*colour",
        })
        return {"calexp": calexp, "src": src, "photoCalib": self._photo_calib(cal, status, raw.data.shape)}

    @staticmethod
    def _calexp(raw: Image, wcs: WCS, cal: Calibration) -> Image:
        obs, fit, ex = cal.obs, cal.fit, cal.extraction
        header = raw.header.copy()
        for key in _SCALING_KEYS:
            header.remove(key, ignore_missing=True, remove_all=True)
        out = Image(np.asarray(raw.data, dtype=np.float32), header, ex.planes.mask.astype(np.int32),
                    ex.planes.variance.astype(np.float32))
        out.set_wcs(wcs.celestial)
        h = out.header
        h["PHOTZP"] = (round(cal.zp_adu, 6), "mag = PHOTZP - 2.5 log10(ADU) - COLORTRM (g-r)")
        h["PHOTZPER"] = (round(fit.zp_err, 6), "[mag] zero-point uncertainty")
        h["COLORTRM"] = (round(fit.colour_term, 6), "colour term on (g-r)")
        h["ZPELSEC"] = (round(fit.zp, 6), "zero-point for e-/s (survey definition)")
        h["MJD-MID"] = (obs.mjd_mid, "[d] MJD (UTC) mid-exposure")
        h["EXPTIME"] = (obs.exptime, "[s] exposure time")
        for key, value, comment in (("SITELAT", obs.site_lat, "[deg] site latitude"),
                                    ("SITELONG", obs.site_lon, "[deg] site longitude (east +)"),
                                    ("SITEELEV", obs.site_elev, "[m] site elevation")):
            if value is not None:
                h[key] = (value, comment)
            else:
                h.remove(key, ignore_missing=True)
        h["FWHMPIX"] = (round(ex.fwhm_pix, 4), "[px] Moffat FWHM of the PSF")
        h["PSFBETA"] = (round(ex.psf.beta, 3), "Moffat beta of the PSF")
        h["BAND"] = (obs.band, "band")
        h["INSTRUME"] = (obs.instrument, "instrument")
        h["GAINUSED"] = (obs.gain, "[e-/ADU] gain used for the variance")
        h["BKGMEAN"] = (round(ex.planes.global_back, 4), "[ADU] mean background")
        h["BKGRMS"] = (round(ex.planes.global_rms, 4), "[ADU] background rms")
        h["APCORR"] = (round(ex.apcorr.value, 6), "aperture -> total flux factor")
        h["NCALSTAR"] = (fit.n_used, "stars in the zero-point fit")
        return out

    @staticmethod
    def _photo_calib(cal: Calibration, status: str, shape) -> dict:
        obs, fit, ex = cal.obs, cal.fit, cal.extraction

        num = finite_or_none
        return {
            "zp": num(fit.zp), "zp_err": num(fit.zp_err), "colour_term": num(fit.colour_term),
            "colour_term_err": num(fit.colour_term_err), "colour_term_fitted": bool(fit.fitted_colour_term),
            "colour_mean": num(fit.colour_mean), "scatter": num(fit.scatter), "n_matched": cal.n_matched,
            "n_used": fit.n_used, "n_sources": len(cal.src), "band": obs.band, "instrument": obs.instrument,
            "exposure": obs.exposure, "mjd_mid": obs.mjd_mid, "exptime": obs.exptime, "airmass": num(obs.airmass),
            "fwhm_pix": num(ex.fwhm_pix), "psf_beta": num(ex.psf.beta), "pixel_scale_arcsec": num(cal.pixel_scale),
            "shape": list(shape), "zp_adu": num(cal.zp_adu), "gain": obs.gain, "read_noise": num(obs.read_noise),
            "saturation_adu": num(obs.saturation_adu), "assumed": list(obs.assumed),
            "aperture_radius_pix": num(ex.aperture_radius), "apcorr": num(ex.apcorr.value),
            "apcorr_err": num(ex.apcorr.error), "apcorr_stars": ex.apcorr.n_stars,
            "apcorr_model": num(ex.apcorr.model_value), "background": num(ex.planes.global_back),
            "background_rms": num(ex.planes.global_rms), "refcat_band": cal.refcat_band, "wcs_status": status,
            "site_lat": num(obs.site_lat), "site_lon": num(obs.site_lon), "site_elev": num(obs.site_elev),
            "zp_definition": "counts_e = exptime * 10**(-0.4*(m + colour_term*(g-r) - zp)); "
                             "zp_adu = zp + 2.5 log10(exptime/gain) for the frame's ADU",
        }
