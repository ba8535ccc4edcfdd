"""The astrometry.net engine: Debian's ``solve-field`` on our own source list, with index files built from
the local reference catalogue by ``build-astrometry-index``.

Offline by construction: no downloaded index series, the index is made from the very catalogue the other
engine matches against, once per catalogue (keyed by a checksum of its positions and magnitudes) and
cached. Two workers building the same index at once each build into a private temporary directory and
rename it into place; the loser of the race discards its copy, so a reader never sees half an index.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...astro.wcs import quiet_wcs
from .fit import Catalogue, SolveResult, accept, refine, sky_centre, tangent_plane, verify
from .sources import Hints, Sources

INDEX_LAYOUT_VERSION = "1"   # bump when the way indexes are built changes, to invalidate old caches
MIN_QUAD_ARCMIN = 0.3        # smallest quads indexed (a 128 px frame at 0.4"/px is still ~0.85')
MAX_BANDS = 24


class AstrometryNetMissing(RuntimeError):
    """solve-field / build-astrometry-index are not installed."""


def solve_field_path() -> str | None:
    return shutil.which("solve-field")


def available() -> bool:
    return solve_field_path() is not None and shutil.which("build-astrometry-index") is not None


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "openastro-parsl" / "astrometry-index"


def catalogue_checksum(cat: Catalogue, jitter_arcsec: float) -> str:
    h = hashlib.sha256()
    for arr in (cat.ra, cat.dec, cat.mag):
        h.update(np.ascontiguousarray(arr, dtype="<f8").tobytes())
    h.update(f"layout={INDEX_LAYOUT_VERSION};jitter={jitter_arcsec:.4f}".encode())
    return h.hexdigest()[:24]


def quad_bands(cat: Catalogue) -> list[tuple[float, float]]:
    """Quad-size bands (arcmin), sqrt(2) apart, from MIN_QUAD_ARCMIN up to the catalogue's diameter."""
    ra0, dec0 = sky_centre(cat.ra, cat.dec)
    w = tangent_plane(cat.ra, cat.dec, ra0, dec0)
    diameter = 2.0 * float(np.nanmax(np.hypot(w[:, 0], w[:, 1]))) / 60.0 if len(cat) else 0.0
    bands, lo = [], MIN_QUAD_ARCMIN
    while lo < diameter and len(bands) < MAX_BANDS:
        bands.append((lo, lo * math.sqrt(2.0)))
        lo *= math.sqrt(2.0)
    return bands


def _build(cat: Catalogue, outdir: Path, key: str, jitter_arcsec: float, log) -> list[dict]:
    from astropy.table import Table

    table = outdir / "catalogue.fits"
    Table({"RA": cat.ra.astype(float), "DEC": cat.dec.astype(float), "MAG": cat.mag.astype(float)}).write(table)
    built = []
    for k, (lo, hi) in enumerate(quad_bands(cat)):
        name = f"index-{k:02d}.fits"
        nside = max(1, int(3520.0 / lo))  # healpix cells about as wide as the smallest quad (as -P presets)
        uid = (int(key[:6], 16) % 20000) * 100 + k
        cmd = ["build-astrometry-index", "-i", str(table), "-e", "1", "-o", str(outdir / name),
               "-N", str(nside), "-l", f"{lo:.4f}", "-u", f"{hi:.4f}", "-S", "MAG", "-A", "RA", "-D", "DEC",
               "-j", f"{jitter_arcsec:g}", "-E", "-M", "-I", str(uid), "-t", str(outdir)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not (outdir / name).exists():
            # Too few stars for quads this small (or this large): that band simply has no index.
            (outdir / name).unlink(missing_ok=True)
            log.debug("no index for quads %.2f-%.2f arcmin: %s", lo, hi, (proc.stdout + proc.stderr)[-200:])
            continue
        built.append({"file": name, "quad_arcmin": [lo, hi], "nside": nside, "id": uid})
    table.unlink()
    return built


def _remove_stale_builds(base: Path, max_age_s: float = 3600.0) -> None:
    """Temporary build directories of workers killed mid-build (an hour old: no live build takes that long)."""
    import time

    for old in base.glob(".*.build-*"):
        try:
            if time.time() - old.stat().st_mtime > max_age_s:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass


def ensure_index(cat: Catalogue, cache_dir: str | Path | None = None, *, jitter_arcsec: float = 1.0,
                 log=None) -> Path:
    """The directory of index files for ``cat`` (built on first use; safe against concurrent builders)."""
    import logging

    log = log or logging.getLogger(__name__)
    if shutil.which("build-astrometry-index") is None:
        raise AstrometryNetMissing("build-astrometry-index not found on PATH (install Debian's astrometry.net: "
                                   "bin/install-astrometry)")
    base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    key = catalogue_checksum(cat, jitter_arcsec)
    final = base / key
    if (final / "manifest.json").exists():
        return final
    base.mkdir(parents=True, exist_ok=True)
    # Complete indexes only ever appear by rename, manifest included; a directory without one was left by
    # something else (a copy cut short, a hand edit) and is rebuilt.
    if final.exists():
        if (final / "manifest.json").exists():
            return final
        shutil.rmtree(final, ignore_errors=True)
    _remove_stale_builds(base)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.build-", dir=base))
    try:
        built = _build(cat, tmp, key, jitter_arcsec, log)
        if not built:
            raise RuntimeError(f"build-astrometry-index made no index from a catalogue of {len(cat)} stars")
        (tmp / "manifest.json").write_text(json.dumps(
            {"checksum": key, "n_stars": len(cat), "layout": INDEX_LAYOUT_VERSION, "jitter_arcsec": jitter_arcsec,
             "indexes": built}, indent=1))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared by whoever runs the pipeline
        try:
            os.rename(tmp, final)
            log.info("built %d astrometry.net index files for %d catalogue stars in %s", len(built), len(cat), final)
        except OSError:
            if not (final / "manifest.json").exists():
                raise
            # Another worker finished first: use theirs.
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


@dataclass
class NetSettings:
    """Knobs of the solve-field run (the task's config fills these)."""

    index_cache_dir: str | None = None
    index_jitter_arcsec: float = 1.0
    cpulimit_s: float = 30.0
    max_sources: int = 100
    scale_tolerance: float = 0.15
    search_radius_arcmin: float | None = None
    blind: bool = True
    min_matches: int = 6
    match_radius_pix: float = 2.0
    max_rms_pix: float = 1.0
    max_false_alarm: float = 1e-9
    odds_to_solve: float = 1e4    # solve-field's own bar (default 1e9) is too high for frames of ~8 stars;
                                  # our verification, shared with the built-in engine, has the last word
    sip_degree: int | None = None
    keep_files: str | None = None  # a directory to copy solve-field's working files to (debugging)


def write_xylist(sources: Sources, path: Path, max_sources: int) -> None:
    """The source list as solve-field reads it: FITS table, 1-based X/Y, FLUX for the brightness order."""
    from astropy.io import fits
    from astropy.table import Table

    n = min(len(sources), max_sources)
    hdu = fits.BinTableHDU(Table({"X": sources.x[:n] + 1.0, "Y": sources.y[:n] + 1.0, "FLUX": sources.flux[:n]}))
    ny, nx = sources.shape
    hdu.header["IMAGEW"], hdu.header["IMAGEH"] = nx, ny
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)


def _run_solve_field(xyls: Path, workdir: Path, index_dir: Path, sources: Sources, hints: Hints, s: NetSettings,
                     use_position: bool) -> tuple[Path | None, str]:
    ny, nx = sources.shape
    cfg = workdir / "engine.cfg"
    cfg.write_text(f"cpulimit {s.cpulimit_s:g}\nadd_path {index_dir}\nautoindex\n")
    wcs_out = workdir / "solution.wcs"
    wcs_out.unlink(missing_ok=True)
    (workdir / "solved").unlink(missing_ok=True)
    cmd = [solve_field_path() or "solve-field", str(xyls), "--config", str(cfg), "--dir", str(workdir),
           "--width", str(nx), "--height", str(ny), "--x-column", "X", "--y-column", "Y",
           "--sort-column", "FLUX", "--no-plots", "--overwrite", "--no-remove-lines", "--uniformize", "0",
           "--crpix-center", "--cpulimit", f"{s.cpulimit_s:g}", "--wcs", str(wcs_out), "--temp-axy",
           "--match", "none", "--rdls", "none", "--corr", "none", "--index-xyls", "none", "--new-fits", "none",
           "--solved", str(workdir / "solved"), "--odds-to-solve", f"{s.odds_to_solve:g}"]
    cmd += ["--tweak-order", str(s.sip_degree)] if s.sip_degree else ["--no-tweak"]
    if hints.scale_arcsec:
        cmd += ["--scale-units", "arcsecperpix", "--scale-low", f"{hints.scale_arcsec * (1 - s.scale_tolerance):.6g}",
                "--scale-high", f"{hints.scale_arcsec * (1 + s.scale_tolerance):.6g}"]
    if use_position and hints.has_position:
        if s.search_radius_arcmin is not None:
            radius_deg = s.search_radius_arcmin / 60.0
        elif hints.scale_arcsec:
            radius_deg = max(float(np.hypot(nx, ny)) * hints.scale_arcsec / 3600.0, 5.0 / 60.0)
        else:
            radius_deg = 1.0
        cmd += ["--ra", f"{hints.ra:.8f}", "--dec", f"{hints.dec:.8f}", "--radius", f"{radius_deg:.6f}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=s.cpulimit_s + 60.0)
    except subprocess.TimeoutExpired:
        return None, f"solve-field timed out after {s.cpulimit_s + 60.0:.0f} s"
    (workdir / "solve-field.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return None, f"solve-field exited {proc.returncode}: {' | '.join(tail)}"
    # solve-field may write its best (unconfirmed) match's WCS even when the field did not solve: only the
    # "solved" marker means it reached its odds.
    if not (workdir / "solved").exists() or not wcs_out.exists():
        return None, "solve-field found no solution"
    return wcs_out, "solved by solve-field"


def solve_astrometry_net(sources: Sources, cat: Catalogue, hints: Hints, settings: NetSettings | None = None,
                         log=None) -> SolveResult:
    """Plate-solve ``sources`` with solve-field against an index of ``cat``; refit and verify like every engine."""
    from astropy.io import fits

    s = settings or NetSettings()
    if not available():
        raise AstrometryNetMissing("solve-field not found on PATH: install Debian's astrometry.net "
                                   "(bin/install-astrometry) or use engine: builtin")
    need = max(4, s.min_matches)
    stats: dict = {}
    if len(sources) < need:
        return SolveResult(None, None, f"only {len(sources)} sources detected (need {need})", stats)
    if len(cat) < need:
        return SolveResult(None, None, f"reference catalogue has only {len(cat)} stars (need {need})", stats)
    index_dir = ensure_index(cat, s.index_cache_dir, jitter_arcsec=s.index_jitter_arcsec, log=log)
    reasons = []
    with tempfile.TemporaryDirectory(prefix="solve-field-") as tmp:
        work = Path(tmp)
        xyls = work / "sources.xyls"
        write_xylist(sources, xyls, s.max_sources)
        attempts = [True, False] if (hints.has_position and s.blind) else [hints.has_position]
        for use_position in attempts:
            wcs_path, why = _run_solve_field(xyls, work, index_dir, sources, hints, s, use_position)
            if wcs_path is None:
                reasons.append(f"{'hinted' if use_position else 'blind'}: {why}")
                continue
            wcs0 = quiet_wcs(fits.getheader(wcs_path))
            raw = verify(wcs0, sources, cat, s.match_radius_pix)
            stats["solve_field_rms_pix"] = raw.rms_pix
            stats["solve_field_n_matched"] = raw.n_matched
            wcs, v = refine(wcs0, sources, cat, radius_pix=s.match_radius_pix, sip_degree=s.sip_degree)
            if accept(v, len(sources), sources.shape, s.match_radius_pix, s.min_matches, s.max_rms_pix,
                      s.max_false_alarm):
                if s.keep_files:
                    shutil.copytree(work, Path(s.keep_files), dirs_exist_ok=True)
                return SolveResult(wcs, v, f"solve-field ({'hinted' if use_position else 'blind'})", stats)
            reasons.append(f"{'hinted' if use_position else 'blind'}: solve-field's solution failed verification "
                           f"({v.n_matched} matched, rms {v.rms_pix:.2f} px)")
        if s.keep_files:
            shutil.copytree(work, Path(s.keep_files), dirs_exist_ok=True)
    return SolveResult(None, None, "; ".join(reasons) or "solve-field found no solution", stats)

