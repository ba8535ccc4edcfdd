"""Small test-data helpers importable from any test module (tests/ is on pytest's pythonpath)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

QA = Path(__file__).resolve().parents[1] / "pipelines" / "qa.yaml"
REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def write_frame(path: Path, header: dict, shape=(32, 32), seed=0, dtype=np.float32) -> Path:
    rng = np.random.default_rng(seed)
    data = (rng.normal(100, 5, shape)).astype(dtype)
    hdr = fits.Header()
    for k, v in header.items():
        hdr[k] = v
    fits.PrimaryHDU(data, hdr).writeto(path)
    return path


def lco_header(expid: int, filt: str = "rp", field: str = "demo1") -> dict:
    return {"TELESCOP": "LCO-1m", "INSTRUME": "lco1m", "EXPID": expid, "FILTER": filt, "OBJECT": field,
            "DATE-OBS": f"2026-03-{10 + expid % 15:02d}T03:00:00.000", "MJD-OBS": 61109.125 + expid % 15,
            "EXPTIME": 60.0, "GAIN": 1.0, "RDNOISE": 7.0, "AIRMASS": 1.2, "RA": 150.1, "DEC": 2.2, "PIXSCALE": 0.39}


def make_small_repo(root: Path, n: int = 6, refcat: bool = True):
    """A repo with n lco1m frames (alternating g/r) of field demo1, target T1, a refcat, chain `defaults`."""
    from astropy.table import Table

    from openastro_parsl.butler import Butler
    from openastro_parsl.ingest.ingest import ingest_raws
    from openastro_parsl.registry.refs import DatasetType

    butler = Butler.create(root / "repo")
    src = root / "incoming"
    src.mkdir(exist_ok=True)
    files = [write_frame(src / f"f{i}.fits", lco_header(100 + i, "rp" if i % 2 else "gp"), seed=i) for i in range(n)]
    ingest_raws(butler, files)
    butler.registry.sync_dimension_records("field", [{"name": "demo1", "ra": 150.1, "dec": 2.2}])
    butler.registry.sync_dimension_records(
        "target", [{"name": "T1", "field": "demo1", "ra": 150.1, "dec": 2.2, "kind": "transit_host"}])
    children = ["raw/all"]
    if refcat:
        butler.put(Table({"id": [1, 2], "ra": [150.1, 150.2], "dec": [2.2, 2.3], "g": [12.0, 14.0], "r": [11.5, 13.2]}),
                   DatasetType("refcat", ("field",), "Table"), {"field": "demo1"}, run="refcats")
        children.append("refcats")
    butler.set_chain("defaults", children)
    return butler


def make_transfer_mode_repo(root: Path):
    """make_small_repo's repository, its six frames (exposures 100..105, g for even ids) ingested two each by
    copy, symlink and direct transfer; returns (butler, source files)."""
    from openastro_parsl.ingest.ingest import ingest_raws

    butler = make_small_repo(root, n=0)
    src = root / "incoming"
    frames = [write_frame(src / f"f{i}.fits", lco_header(100 + i, "rp" if i % 2 else "gp"), seed=i) for i in range(6)]
    for mode, pair in (("copy", frames[:2]), ("symlink", frames[2:4]), ("direct", frames[4:])):
        assert len(ingest_raws(butler, pair, transfer=mode).ingested) == 2
    return butler, frames


def succeeded_count(status_db: Path) -> int:
    """Quanta recorded succeeded in a run's status store, read from another process while the run goes."""
    import sqlite3

    try:
        con = sqlite3.connect(status_db, timeout=5)
        n = con.execute("SELECT COUNT(*) FROM quantum WHERE state='succeeded'").fetchone()[0]
        con.close()
        return n
    except sqlite3.Error:
        return 0
