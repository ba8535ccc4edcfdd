"""Co-addition per field x band: SNR^2-weighted, sigma-clipped mean of the normalised frames.

The task only selects frames (by epoch range for a template), checks them and writes the products; the
science is in :mod:`openastro_parsl.tasks.image.coadd_kernel`, which works tile by tile under ``memory_cap_mb``.
The transient branch runs this task again as ``templateCoadd`` with ``mjd_max`` set and its outputs renamed
(``config.connections: {coadd: templateCoadd, coverage: templateCoverage}``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from ...datastore.image import MASK_BITS, Image
from ...pipeline.connections import Connections, Input, Output
from ...pipeline.task import NoWorkFound, PipelineTask, Resources, TaskConfig
from .coadd_kernel import coadd

__all__ = ["CoaddConfig", "CoaddTask", "select_epochs"]

_WCS_PREFIXES = ("CTYPE", "CRVAL", "CRPIX", "CDELT", "CUNIT", "CD1_", "CD2_", "PC1_", "PC2_", "WCSAXES",
                 "LONPOLE", "LATPOLE", "RADESYS", "EQUINOX", "MJDREF", "DATEREF")


def select_epochs(mjds: list[float | None], mjd_min: float | None, mjd_max: float | None) -> list[int]:
    """Indices of frames with mjd_min <= MJD-MID <= mjd_max (open ends when None); frames without a time are
    kept only when no range is asked for."""
    if mjd_min is None and mjd_max is None:
        return list(range(len(mjds)))
    lo = -np.inf if mjd_min is None else mjd_min
    hi = np.inf if mjd_max is None else mjd_max
    return [i for i, t in enumerate(mjds) if t is not None and lo <= t <= hi]


class CoaddConfig(TaskConfig):
    mjd_min: float | None = Field(None, description="Use only frames with MJD-MID >= this (a template's epochs).")
    mjd_max: float | None = Field(None, description="Use only frames with MJD-MID <= this.")
    weighting: Literal["frame", "pixel", "point_source"] = Field(
        "frame", description="SNR^2 weights: frame = 1/sky variance per frame; pixel = 1/variance per pixel; "
        "point_source = 1/(sky variance * FWHM^2) per frame.")
    clip_sigma: float = Field(3.0, ge=0, description="Reject samples more than this many sigma from the "
                              "per-pixel median (0: no clipping).")
    clip_ampfrac: float = Field(2.0, ge=0, description="Fraction of the per-pixel median added in quadrature "
                                "to the clipping noise: 0 on the sky, it only relaxes clipping on sources, where "
                                "frames of different seeing legitimately differ several-fold.")
    clip_iters: int = Field(5, ge=0, description="Most clipping passes.")
    min_clip_frames: int = Field(3, ge=2, description="Clip only pixels with at least this many valid frames.")
    bad_mask_planes: list[str] = Field(["BAD", "SAT", "CR", "NO_DATA"], description="Mask planes whose pixels "
                                       "are left out of the co-add.")
    memory_cap_mb: float = Field(1024.0, gt=0, description="Working-memory cap of the co-add kernel (MB): the "
                                 "image is processed in tiles small enough to stay under it.")

    @model_validator(mode="after")
    def _check(self):
        unknown = set(self.bad_mask_planes) - set(MASK_BITS)
        if unknown:
            raise ValueError(f"bad_mask_planes: unknown plane(s) {sorted(unknown)}; known: {sorted(MASK_BITS)}")
        if self.mjd_min is not None and self.mjd_max is not None and self.mjd_min > self.mjd_max:
            raise ValueError(f"mjd_min {self.mjd_min} > mjd_max {self.mjd_max}")
        return self


class CoaddConnections(Connections):
    frames = Input("normExp", ("instrument", "exposure"), "Image", multiple=True, lazy=True,
                   doc="Normalised frames of one field and band, on the field grid (memory-mapped).")
    coadd = Output("coadd", ("field", "band"), "Image", doc="Co-added image; VARIANCE = uncertainty^2.")
    coverage = Output("coaddCoverage", ("field", "band"), "Image", doc="Frames contributing per pixel.")


class CoaddTask(PipelineTask):
    """Stack the normalised frames of a field and band (optionally of an epoch range) into one deep image."""

    dimensions = ("field", "band")
    Config = CoaddConfig
    Connections = CoaddConnections
    resources = Resources(cores=1, memory_mb=4096, walltime_min=60, resource_class="slow")

    def run(self, frames, data_ids=None, data_id=None):
        c = self.config
        where = ", ".join(f"{k}={v}" for k, v in dict(data_id).items()) if data_id else "coadd"
        ids = list((data_ids or {}).get("frames") or [{} for _ in frames])

        def name(i):
            d = ids[i]
            return f"{d['instrument']}/{d['exposure']}" if "instrument" in d else \
                f"{frames[i].header.get('INSTRUME', '?')}/frame {i}"

        mjds = [float(f.header["MJD-MID"]) if "MJD-MID" in f.header else None for f in frames]
        chosen = select_epochs(mjds, c.mjd_min, c.mjd_max)
        if not chosen:
            raise NoWorkFound(f"{where}: none of {len(frames)} frames has MJD-MID in "
                              f"[{c.mjd_min}, {c.mjd_max}]")
        shape = frames[chosen[0]].shape
        zps = set()
        for i in chosen:
            f = frames[i]
            if f.variance is None:
                raise ValueError(f"{where}: {name(i)} has no VARIANCE plane")
            if f.shape != shape:
                raise ValueError(f"{where}: {name(i)} has shape {f.shape}, the others {shape}: not on one grid")
            zps.add(round(float(f.header.get("PHOTZP", np.nan)), 6))
        if len(zps) > 1:
            raise ValueError(f"{where}: frames are on different zero-points {sorted(zps)}; normalise them first")
        use = [frames[i] for i in chosen]
        fwhm = None
        if c.weighting == "point_source":
            fwhm = [float(f.header.get("FWHMGRID", f.header.get("FWHMPIX", np.nan))) for f in use]
        bad = 0
        for p in c.bad_mask_planes:
            bad |= MASK_BITS[p]
        res = coadd(use, weighting=c.weighting, fwhm=fwhm, clip_sigma=c.clip_sigma, clip_ampfrac=c.clip_ampfrac,
                    clip_iters=c.clip_iters, min_clip_frames=c.min_clip_frames, bad_bits=bad,
                    memory_cap_mb=c.memory_cap_mb)
        used_mjd = [mjds[i] for i in chosen if mjds[i] is not None]
        header = self._header(use[0].header, len(use), used_mjd, res)
        for k, i in enumerate(chosen):
            header[f"INP{k + 1:04d}"] = (name(i), "input frame")
            if np.isfinite(res.weights[k]):
                header[f"WGT{k + 1:04d}"] = (float(res.weights[k] / np.nansum(res.weights)), "relative weight")
        mask = np.where(res.coverage == 0, MASK_BITS["NO_DATA"], 0).astype(np.int32)
        cov_header = header.copy()
        cov_header["BUNIT"] = ("frames", "frames contributing per pixel")
        self.log.info("%s: %d of %d frames, %d tiles of %s, %d samples clipped, median coverage %.0f",
                      where, len(use), len(frames), res.n_tiles, res.tile_shape, res.n_clipped,
                      float(np.median(res.coverage)))
        return {"coadd": Image(res.image, header, mask, res.variance),
                "coverage": Image(res.coverage, cov_header)}

    def _header(self, first, n, mjds, res):
        from astropy.io import fits

        c = self.config
        h = fits.Header()
        for card in first.cards:
            if card.keyword.startswith(_WCS_PREFIXES) or card.keyword in ("PHOTZP", "BAND", "FILTER", "OBJECT"):
                h.append(card)
        h["NFRAMES"] = (n, "frames co-added")
        if mjds:  # FITS headers cannot hold NaN: frames without a time leave the keys out
            h["MJDMIN"] = (float(min(mjds)), "[d] earliest MJD-MID used")
            h["MJDMAX"] = (float(max(mjds)), "[d] latest MJD-MID used")
        h["WEIGHTNG"] = (c.weighting, "SNR^2 weighting scheme")
        h["CLIPSIG"] = (c.clip_sigma, "sigma-clipping threshold")
        h["CLIPAMPF"] = (c.clip_ampfrac, "clipping amplitude fraction")
        h["NCLIPPED"] = (int(res.n_clipped), "samples rejected by clipping")
        h["MEMCAPMB"] = (c.memory_cap_mb, "kernel memory cap (MB)")
        return h
