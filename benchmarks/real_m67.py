"""Real frames through the science kernels: plate solving, calibration and a co-add of M67 (no synthetic data).

The frames and the catalogue are in ``tests/data/real/`` (its README says where each comes from and what is
true about it): three ESO CCD frames of M67 in Cousins B, V and R (1990, already bias/flat/sky corrected by
ESO-MIDAS, no WCS), the DSS (POSS-I red, 1951) scan of M67 whose plate solution in the header is the truth
the solver is checked against, and 1494 Gaia DR3 M67 members (positions at 2016.0, proper motions, G/BP/RP).

    python benchmarks/real_m67.py          # about 30 s on one core

Every figure printed here is asserted, with its tolerance, by ``tests/tasks/test_real_frames.py``.
The bands: Gaia has no B, V or R, so each frame is calibrated against the nearest Gaia band (B -> BP,
V -> G, R -> RP) with a free colour term on BP - RP; the zero-point is that of the frame's ADU on the
Gaia band at BP - RP = 0, not a Johnson-Cousins zero-point. The DSS plate is only solved, not calibrated:
photographic density is not linear in flux (calibrate keeps 44 of 536 matched stars, colour term -1.5).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from astropy.wcs import WCS

from openastro_parsl.astro.observation import ObservationInfo
from openastro_parsl.astro.refcat import propagate
from openastro_parsl.astro.wcs import wcs_from_cards
from openastro_parsl.datastore.image import Image
from openastro_parsl.tasks.astrometry.fit import Catalogue, mutual_match, verify, wcs_difference_rms
from openastro_parsl.tasks.astrometry.solve import PlateSolveConfig, plate_solve
from openastro_parsl.tasks.astrometry.sources import detect_sources
from openastro_parsl.tasks.image.coadd_kernel import coadd
from openastro_parsl.tasks.image.normalize import normalize_image
from openastro_parsl.tasks.image.reproject import grid_wcs, warp_image
from openastro_parsl.tasks.photometry.calibrate import CalibrateConfig, Calibration, calibrate_frame

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "real"
GAIA = "m67_gaia_dr3_members.csv"
DSS = "M6707HH.fits"
DSS_EPOCH = 1951.911  # the plate's EPOCH card
ESO_EPOCH = Time("1990-12-21").jyear  # the B frame's DATE-OBS '21/12/90'; V and R are its neighbours (IP_JSEQ)


@dataclass(frozen=True)
class EsoFrame:
    """One of the three ESO frames: what its header states only in IHAP COMMENT text, made explicit."""

    band: str
    file: str
    exptime: float   # TM-EXPOS (COMMENT); only the B frame has an EXPTIME card (80.0)
    gaia_band: str   # the Gaia magnitude it is calibrated against
    sequence: int    # IP_JSEQ: the order the three were taken in


ESO_FRAMES = (EsoFrame("V", "M67_V.fits", 20.05, "G", 18710), EsoFrame("B", "M67_B.fits", 80.05, "BP", 18711),
              EsoFrame("R", "M67_R.fits", 15.05, "RP", 18712))


def gaia_refcat(path: Path = DATA / GAIA, epoch: float | None = None) -> Table:
    """The Gaia file as a reference catalogue: ``id, ra, dec, pmra, pmdec, G, BP, RP`` and ``*_err`` (mag,
    from the flux-over-error columns), moved to ``epoch`` by the proper motions when one is given."""
    t = Table.read(path, format="ascii.csv")
    k = 2.5 / np.log(10.0)
    out = Table({"id": np.asarray(t["source_id"], np.int64), "ra": t["ra"], "dec": t["dec"],
                 "pmra": t["pmra"], "pmdec": t["pmdec"],
                 "variable": np.asarray(t["phot_variable_flag"]) == "VARIABLE"})
    for band, col in (("G", "phot_g_mean"), ("BP", "phot_bp_mean"), ("RP", "phot_rp_mean")):
        out[band] = np.asarray(np.ma.filled(np.ma.asarray(t[f"{col}_mag"], float), np.nan), float)
        out[f"{band}_err"] = k / np.asarray(np.ma.filled(np.ma.asarray(t[f"{col}_flux_over_error"], float), np.nan))
    return propagate(out, epoch) if epoch is not None else out


def read_frame(name: str) -> tuple[Image, fits.Header]:
    """The frame as the solver sees it (pixels as float, header as written) and its original header."""
    with fits.open(DATA / name) as hdul:
        header = hdul[0].header.copy()
        return Image(np.asarray(hdul[0].data, dtype=np.float64), header.copy()), header


RCA_PIXEL_UM = 30.0  # RCA 320 x 512 CCDs have 30 um pixels; the ESO headers give no pixel size


def focal_length_mm(pixel_um: float, scale_arcsec: float) -> float:
    """The focal length a pixel scale implies for a pixel size."""
    return 206264.806 * pixel_um / 1000.0 / scale_arcsec


def solve(image: Image, refcat: Table, *, use_hints: bool = True, engine: str = "builtin") -> dict:
    """``plate_solve`` with the catalogue's G as the brightness order; the header WCS, if any, is not trusted."""
    config = PlateSolveConfig(engine=engine, mag_column="G", trust_header_wcs=False, use_hints=use_hints)
    return plate_solve(image, refcat, config)


def dss_truth_rms(solution: dict, refcat: Table, header: fits.Header, shape) -> float:
    """RMS (px) between where the solved WCS and the DSS plate solution in the header put the catalogue."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth = WCS(header)  # astropy decodes the DSS plate keywords (PLTRAH..., PPO, AMDX, AMDY)
    rms, _ = wcs_difference_rms(wcs_from_cards(solution["wcs"]), truth, Catalogue.from_table(refcat, "G"), shape)
    return rms


# La Silla (the frames' source says ESO La Silla; the header names no site).
LA_SILLA = (-29.2567, -70.7300, 2400.0)
ESO_START = Time("1990-12-21") + 9468.0 * u.s  # the B frame: DATE-OBS + TM-START (UT seconds)
ASSUMED_GAIN = 1.0  # e-/ADU: not in the header; zp_adu and the scatter do not depend on it


def eso_observation(f: EsoFrame, header: fits.Header) -> ObservationInfo:
    """What calibration needs, spelled out by hand: no ingest translator reads these IHAP/MIDAS headers yet.

    V and R carry no date: they were taken next to B (consecutive IP_JSEQ), so B's start stands for all three.
    """
    airmass = header.get("AIRMASS")
    return ObservationInfo(
        translator="by-hand (ESO-MIDAS/IHAP)", instrument="eso_rca3", exposure=f.sequence, band=f.band,
        physical_filter=f"Cousins {f.band}", mjd_start=float(ESO_START.mjd),
        mjd_mid=float(ESO_START.mjd + f.exptime / 172800.0), exptime=f.exptime,
        airmass=float(airmass) if airmass is not None else None, site_lat=LA_SILLA[0], site_lon=LA_SILLA[1],
        site_elev=LA_SILLA[2], gain=ASSUMED_GAIN, read_noise=None, saturation_adu=None,
        assumed=("gain", "site") if f.band == "B" else ("gain", "site", "mjd_start"), obs_type="science",
        reduced=True)


def eso_calibrate_config() -> CalibrateConfig:
    """Each Cousins band against its nearest Gaia band, colour term free on BP - RP (see module doc)."""
    return CalibrateConfig(band_map={f.band: f.gaia_band for f in ESO_FRAMES}, colour=("BP", "RP"))


def calibrate_eso(f: EsoFrame, image: Image, solution: dict, refcat: Table) -> Calibration:
    """``calibrate_frame`` on one solved ESO frame."""
    obs = eso_observation(f, image.header)
    return calibrate_frame(np.asarray(image.data), obs, wcs_from_cards(solution["wcs"]), refcat,
                           eso_calibrate_config(), where=f.file)


def calexp(image: Image, solution: dict, cal: Calibration) -> Image:
    """The calibrated frame as the co-add branch reads it: pixels, solved WCS, mask and variance planes."""
    out = Image(np.asarray(image.data, np.float32), fits.Header(), cal.extraction.planes.mask.astype(np.int32),
                cal.extraction.planes.variance.astype(np.float32))
    out.set_wcs(wcs_from_cards(solution["wcs"]))
    return out


def alignment(a: Image, b: Image, n_bright: int = 40, radius_pix: float = 2.0) -> tuple[float, float, int]:
    """Median offset (dx, dy, in grid pixels) of ``b``'s stars from ``a``'s, over ``a``'s brightest ``n_bright``
    that both frames detect: how far apart two warped frames put the same stars before they are added."""
    sa = detect_sources(np.asarray(a.data, float), None).brightest(n_bright)
    sb = detect_sources(np.asarray(b.data, float), None)
    det, k = mutual_match(sa.xy, sb.xy, radius_pix)
    d = np.median(sb.xy[k] - sa.xy[det], axis=0) if len(det) else np.array([np.nan, np.nan])
    return float(d[0]), float(d[1]), int(len(det))


def coadd_eso(solved: dict, cals: dict, refcat: Table, radius_pix: float = 2.0) -> dict:
    """Warp B and R onto V's grid, scale each to zero-point 25 by its own zp, co-add, and check the stack: how
    far the warped B and R put the stars from V (``alignment``), and the stack's own detections against the
    catalogue through the grid WCS (misaligned inputs smear the stars and push the residuals up)."""
    exps = {b: calexp(image, s, cals[b]) for b, (_, image, s) in solved.items()}
    grid, shape = grid_wcs(exps["V"].wcs, exps["V"].shape)
    warped = {b: normalize_image(warp_image(exps[b], grid, shape), cals[b].zp_adu) for b in ("B", "V", "R")}
    res = coadd(list(warped.values()), weighting="frame")
    full = res.coverage == len(warped)
    sources = detect_sources(np.where(full, res.image, np.nan), ~full)
    v = verify(grid, sources, Catalogue.from_table(refcat, "G"), radius_pix)
    return {"shape": shape, "n_covered3": int(full.sum()), "n_sources": len(sources), "n_matched": v.n_matched,
            "n_in_frame": v.n_in_frame, "rms_pix": v.rms_pix, "result": res,
            "alignment": {b: alignment(warped["V"], warped[b]) for b in ("B", "R")}}


def main() -> None:
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    print("DSS M67 (POSS-I red, 1951.9) against Gaia DR3 members, header WCS ignored:")
    dss, dss_header = read_frame(DSS)
    for label, epoch, hints in (("at the plate epoch", DSS_EPOCH, True), ("at Gaia's 2016.0", None, True),
                                ("at the plate epoch, blind", DSS_EPOCH, False)):
        cat = gaia_refcat(epoch=epoch)
        s = solve(dss, cat, use_hints=hints)
        rms = dss_truth_rms(s, cat, dss_header, dss.shape) if s["status"] == "solved" else float("nan")
        print(f"  {label:28s} {s['status']}: {s['n_matched']} stars, rms {s['rms_pix']:.3f} px "
              f"({s['rms_pix'] * s['pixel_scale_arcsec']:.2f}\"), {s['pixel_scale_arcsec']:.4f}\"/px, "
              f"vs the plate solution {rms:.3f} px, {s['elapsed_s']:.1f} s")
    pixel_um = float(dss_header["XPIXELSZ"])
    print(f"  implied focal length {focal_length_mm(pixel_um, s['pixel_scale_arcsec']):.0f} mm for the scan's "
          f"{pixel_um:.2f} um pixels (the plate's PLTSCALE {dss_header['PLTSCALE']}\"/mm: "
          f"{206264.806 / float(dss_header['PLTSCALE']):.0f} mm)")

    print("ESO M67 B/V/R (RCA CCD, 1990), solved without any WCS:")
    cat = gaia_refcat(epoch=ESO_EPOCH)
    solved = {}
    for f in ESO_FRAMES:
        image, _ = read_frame(f.file)
        s = solve(image, cat)
        solved[f.band] = (f, image, s)
        print(f"  {f.band}: {s['status']} ({s['reason']}): {s['n_matched']} of {s['n_catalogue_in_frame']} stars, "
              f"rms {s['rms_pix']:.3f} px, {s['pixel_scale_arcsec']:.4f}\"/px, {s['elapsed_s']:.1f} s")
    scale = float(np.mean([s["pixel_scale_arcsec"] for _, _, s in solved.values()]))
    print(f"  implied focal length {focal_length_mm(RCA_PIXEL_UM, scale):.0f} mm if the pixels are {RCA_PIXEL_UM:.0f} um")
    cals = {}
    for band, (f, image, s) in solved.items():
        cal = calibrate_eso(f, image, s, cat)
        cals[band] = cal
        fit = cal.fit
        print(f"  {band} vs Gaia {f.gaia_band}: zp_adu {cal.zp_adu:.3f} +- {fit.zp_err:.3f}, colour term "
              f"{fit.colour_term:+.3f} +- {fit.colour_term_err:.3f} on BP-RP, {fit.n_used}/{cal.n_matched} stars, "
              f"scatter {fit.scatter:.3f} mag, FWHM {cal.extraction.fwhm_pix:.2f} px")
    result = coadd_eso(solved, cals, cat)
    for band, (dx, dy, n) in result["alignment"].items():
        print(f"  {band} warped onto the V grid: its stars sit ({dx:+.3f}, {dy:+.3f}) px from V's ({n} stars)")
    print(f"  co-add of B+V+R on the V grid: {result['n_covered3']} px covered by all three, "
          f"{result['n_matched']} Gaia stars at rms {result['rms_pix']:.3f} px")
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
