"""The ``diffim`` task, and ``difference_image``: subtract, calibrate the noise, detect, cut out."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ....astro.wcs import pixel_scale_arcsec
from ....datastore.image import MASK_BITS, Image
from ....pipeline.connections import Connections, Input, Output
from ....pipeline.task import NoWorkFound, PipelineTask, Resources, TaskConfig
from .detection import calibrate_noise, detect_candidates, make_cutouts
from .subtract import subtract

__all__ = ["DiffimConfig", "DiffimConnections", "DiffimTask", "difference_image"]


def _where(data_id) -> str:
    return ", ".join(f"{k}={v}" for k, v in dict(data_id).items()) if data_id else "frame"


def difference_image(science: Image, template: Image, *, threshold: float = 5.0, snr_min: float = 5.0,
                     stamp_size: int = 31, min_area: int = 3, noise_seed: int = 0, **subtract_options):
    """Subtract, calibrate the noise, detect, cut out: (diff Image, candidate Table, cutouts dict, result)."""
    res = subtract(science, template, **subtract_options)
    res.noise_factor = calibrate_noise(res, seed=noise_seed)
    cands = detect_candidates(res, science.wcs, threshold=threshold, snr_min=snr_min, min_area=min_area)
    cutouts = make_cutouts(res, cands, stamp_size)
    header = science.header.copy()
    header["PHOTZP"] = (res.zp, "mag = PHOTZP - 2.5 log10(flux), science units")
    header["DIFFCONV"] = (res.convolved, "image convolved by the PSF-matching kernel")
    header["KERNMETH"] = (res.method, "PSF-matching kernel")
    header["KERNSUM"] = (res.kernel_sum, "kernel sum (flux ratio check)")
    header["KERNSTAR"] = (res.kernel_stars, "stars used for the kernel fit")
    header["KERNCHI2"] = (res.kernel_chi2 if np.isfinite(res.kernel_chi2) else -1.0, "kernel fit chi2/dof")
    header["FWHMSCI"] = (res.fwhm_science, "[px] science PSF FWHM (Moffat)")
    header["BETASCI"] = (res.psf_science.beta, "science PSF Moffat beta")
    header["PSFSRC"] = (res.psf_science.source, "science PSF from: fit / header / default")
    header["FWHMTMPL"] = (res.fwhm_template, "[px] template PSF FWHM, science grid")
    header["PSFFWHM"] = (res.psf_fwhm, "[px] difference image PSF FWHM")
    header["NOISECOR"] = (res.noise_factor, "PSF-flux error factor (correlated noise)")
    header["TMPLSCAL"] = (res.template_scale, "template flux scale to science zp")
    mask = res.smask.copy()
    mask[res.nodata] |= MASK_BITS["NO_DATA"]
    var = np.where(np.isfinite(res.variance), res.variance, 0.0).astype(np.float32)
    diff_image = Image(res.difference.astype(np.float32), header, mask, var)
    return diff_image, cands, cutouts, res


class DiffimConfig(TaskConfig):
    threshold: float = Field(5.0, gt=0, description="Detection threshold (sigma) of the matched-filtered difference.")
    snr_min: float = Field(5.0, gt=0, description="Keep candidates whose PSF-fit |S/N| (noise-calibrated) is at least this.")
    min_area: int = Field(3, ge=1, description="Fewest connected pixels above threshold for a detection.")
    stamp_size: int = Field(31, ge=9, description="Cutout side (pixels, odd) stored per candidate.")
    kernel_stars: int = Field(25, ge=1, description="Most stars used to fit the PSF-matching kernel.")
    kernel_min_stars: int = Field(2, ge=1, description="Fewer usable stars than this: Gaussian kernel from the FWHMs.")
    kernel_min_snr: float = Field(20.0, gt=0, description="Least S/N of a kernel star.")
    degrees: tuple[int, int, int] = Field((4, 3, 2), description="Polynomial degrees of the three Gaussian kernel "
                                          "basis families (narrow, matched, wide).")
    background_box: int = Field(64, ge=16, description="sep background mesh (pixels).")
    template_zp: float | None = Field(None, description="Template zero-point if its header has no PHOTZP.")
    saturation_adu: float | None = Field(None, description="Science saturation level (ADU) for choosing kernel stars; "
                                         "default: header SATURATE, else the SAT mask alone.")
    resample: str = Field("exact", pattern="^(exact|interp)$", description="Template resampling onto the science "
                          "grid: exact (flux-conserving pixel overlap) or interp (bicubic, faster).")
    psf_beta: float = Field(3.0, gt=1, description="Moffat beta assumed when neither the header (PSFBETA) nor "
                            "enough stars give it.")
    max_kernel_ratio: float = Field(1.25, gt=1, description="Reject fitted kernels whose sum (flux ratio) is off "
                                    "by more than this factor from the zero-points' prediction.")
    difference_background: bool = Field(True, description="Subtract the smooth residual sky of the difference.")


class DiffimConnections(Connections):
    calexp = Input("calexp", ("instrument", "exposure"), "Image", doc="Calibrated science frame (ADU, WCS, PHOTZP).")
    template = Input("templateCoadd", ("field", "band"), "Image", doc="Deep reference at PHOTZP 25 on the field grid.")
    diff = Output("diffExp", ("instrument", "exposure"), "Image", doc="Science minus matched template, science units.")
    sources = Output("diaSrc", ("instrument", "exposure"), "Table", doc="Candidates in the difference.")
    cutouts = Output("diaCutouts", ("instrument", "exposure"), "NumpyArrays", doc="Science/reference/difference stamps.")


class DiffimTask(PipelineTask):
    """Difference image of one exposure against its field's template, its 5-sigma candidates and their stamps."""

    dimensions = ("instrument", "exposure")
    Config = DiffimConfig
    Connections = DiffimConnections
    resources = Resources(cores=1, memory_mb=1024, walltime_min=10)

    def run(self, calexp, template, data_id=None):
        where = _where(data_id)
        c = self.config
        if "PHOTZP" not in calexp.header:
            raise ValueError(f"{where}: calexp has no PHOTZP header card (run calibrate first)")
        if calexp.wcs is None:
            raise ValueError(f"{where}: calexp has no celestial WCS")
        if template.wcs is None:
            raise ValueError(f"{where}: templateCoadd has no celestial WCS")
        sat = c.saturation_adu if c.saturation_adu is not None else calexp.header.get("SATURATE")
        seed = int(dict(data_id).get("exposure", 0)) % (2**31) if data_id else 0
        try:
            diff, cands, cutouts, res = difference_image(
                calexp, template, threshold=c.threshold, snr_min=c.snr_min, stamp_size=c.stamp_size | 1,
                min_area=c.min_area, noise_seed=seed, template_zp=c.template_zp, kernel_stars=c.kernel_stars,
                kernel_min_stars=c.kernel_min_stars, kernel_min_snr=c.kernel_min_snr, saturation=sat,
                background_box=c.background_box, degrees=tuple(c.degrees), resample=c.resample, psf_beta=c.psf_beta,
                max_kernel_ratio=c.max_kernel_ratio, difference_background=c.difference_background)
        except NoWorkFound as exc:
            raise NoWorkFound(f"{where}: {exc}") from None
        except (ValueError, RuntimeError) as exc:
            raise type(exc)(f"{where}: {exc}") from exc
        h = calexp.header
        cands.meta.update({
            "zp": res.zp, "mjd_mid": float(h.get("MJD-MID", np.nan)), "band": str(h.get("BAND", "")),
            "instrument": str(h.get("INSTRUME", "")), "exptime": float(h.get("EXPTIME", np.nan)),
            "psf_fwhm": res.psf_fwhm, "fwhm_science": res.fwhm_science, "fwhm_template": res.fwhm_template,
            "kernel_method": res.method, "convolved": res.convolved, "kernel_sum": res.kernel_sum,
            "kernel_stars": res.kernel_stars, "noise_factor": res.noise_factor,
            "pixel_scale_arcsec": pixel_scale_arcsec(calexp.wcs),
            # where the telescope stands (calibrate's cards): alerts predict minor planets topocentrically
            **{k: float(h[card]) for k, card in (("site_lat", "SITELAT"), ("site_lon", "SITELONG"),
                                                 ("site_elev", "SITEELEV")) if isinstance(h.get(card), (int, float))},
        })
        if data_id:
            cands.meta["exposure"] = int(dict(data_id).get("exposure", -1))
            cands.meta["instrument"] = str(dict(data_id).get("instrument", cands.meta["instrument"]))
        self.log.info("%s: %s kernel (%d stars, sum %.3f, %s convolved), PSF FWHM %.2f px, noise x%.2f, %d candidates",
                      where, res.method, res.kernel_stars, res.kernel_sum, res.convolved, res.psf_fwhm,
                      res.noise_factor, len(cands))
        return {"diff": diff, "sources": cands, "cutouts": cutouts}
