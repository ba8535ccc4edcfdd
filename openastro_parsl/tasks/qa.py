"""Data-quality tasks: per-frame statistics, their per field x band summary, and per-target coverage.

Cheap and useful before any science stage (a bad night shows here first), and the smallest real pipeline
that exercises every planner shape: per exposure, gathering per field x band, per target with a
prerequisite reference catalogue.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ..pipeline.connections import Connections, Input, Output, PrerequisiteInput
from ..pipeline.task import PipelineTask, Resources, TaskConfig


class FrameStatsConfig(TaskConfig):
    detect_sigma: float = Field(5.0, gt=0, description="Detection threshold (in background sigma) for the source count.")
    saturation_adu: float = Field(60000.0, gt=0, description="Pixels at or above this are counted as saturated.")
    min_area: int = Field(5, ge=1, description="Fewest connected pixels for a detection.")


class FrameStatsConnections(Connections):
    raw = Input("raw", ("instrument", "exposure"), "RawImage", doc="The raw frame.")
    stats = Output("frameStats", ("instrument", "exposure"), "StructuredData", doc="Background, noise, sources.")


class FrameStatsTask(PipelineTask):
    """Background level and noise (sigma-clipped), saturated fraction, and a sep source count."""

    dimensions = ("instrument", "exposure")
    Config = FrameStatsConfig
    Connections = FrameStatsConnections
    resources = Resources(cores=1, memory_mb=512, walltime_min=5)

    def run(self, raw):
        import sep
        from astropy.stats import sigma_clipped_stats

        data = np.ascontiguousarray(raw.data, dtype=np.float64)
        mean, median, std = sigma_clipped_stats(data, sigma=3.0, maxiters=5)
        bkg = sep.Background(data)
        sub = data - bkg
        objects = sep.extract(sub, self.config.detect_sigma, err=bkg.globalrms, minarea=self.config.min_area)
        saturated = float(np.mean(data >= self.config.saturation_adu))
        self.log.info("background %.1f, noise %.2f, %d sources", median, std, len(objects))
        return {"stats": {"background": float(median), "noise": float(std), "n_sources": int(len(objects)),
                          "saturated_fraction": saturated, "has_wcs": "CTYPE1" in raw.header,
                          "shape": list(data.shape)}}


class FieldQaConfig(TaskConfig):
    max_noise_ratio: float = Field(3.0, gt=1, description="Flag frames noisier than this times the median noise.")


class FieldQaConnections(Connections):
    stats = Input("frameStats", ("instrument", "exposure"), "StructuredData", multiple=True)
    summary = Output("fieldQa", ("field", "band"), "Table")


class FieldQaTask(PipelineTask):
    """One row per frame of a field and band, with frames far noisier than their peers flagged."""

    dimensions = ("field", "band")
    Config = FieldQaConfig
    Connections = FieldQaConnections

    def run(self, stats, data_ids=None):
        from astropy.table import Table

        noise = np.array([s["noise"] for s in stats])
        ref = float(np.median(noise))
        table = Table({
            "background": [s["background"] for s in stats], "noise": noise,
            "n_sources": [s["n_sources"] for s in stats], "has_wcs": [s["has_wcs"] for s in stats],
            "flagged": noise > self.config.max_noise_ratio * ref,
        })
        if data_ids is not None:
            table["instrument"] = [d["instrument"] for d in data_ids["stats"]]
            table["exposure"] = [d["exposure"] for d in data_ids["stats"]]
        table.meta["median_noise"] = ref
        return {"summary": table}


class TargetCoverageConfig(TaskConfig):
    match_radius_arcsec: float = Field(3.0, gt=0, description="Radius for finding the target in the reference catalogue.")


class TargetCoverageConnections(Connections):
    raws = Input("raw", ("instrument", "exposure"), "RawImage", multiple=True)
    refcat = PrerequisiteInput("refcat", ("field",), "Table", doc="The field's reference catalogue.")
    coverage = Output("targetCoverage", ("target", "band"), "StructuredData")


class TargetCoverageTask(PipelineTask):
    """Which frames of a band contain a target (by their WCS), and the target's catalogue magnitude."""

    dimensions = ("target", "band")
    Config = TargetCoverageConfig
    Connections = TargetCoverageConnections

    def run(self, raws, refcat, data_ids=None, records=None):
        from astropy.coordinates import SkyCoord

        target = (records or {}).get("target", {})
        pos = SkyCoord(target.get("ra"), target.get("dec"), unit="deg")
        inside, unsolved = 0, 0
        for raw in raws:
            wcs = raw.wcs
            if wcs is None:
                unsolved += 1
                continue
            x, y = wcs.world_to_pixel(pos)
            ny, nx = raw.data.shape
            inside += int(0 <= x < nx and 0 <= y < ny)
        cat = SkyCoord(refcat["ra"], refcat["dec"], unit="deg")
        sep = pos.separation(cat).arcsec
        best = int(np.argmin(sep)) if len(sep) else -1
        matched = best >= 0 and sep[best] <= self.config.match_radius_arcsec
        return {"coverage": {"frames": len(raws), "frames_containing": inside, "frames_without_wcs": unsolved,
                             "catalogue_id": int(refcat["id"][best]) if matched else None,
                             "catalogue_r": float(refcat["r"][best]) if matched else None}}
