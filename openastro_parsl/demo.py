"""Build the demo repository: a synthetic survey with known truth, ingested as a user's raws would be.

Kept apart from ``sim`` (which only makes files) so the simulator stays usable without a repository, and
apart from the CLI so tests build the same repository the README's demo builds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .butler import Butler
from .ingest.ingest import IngestReport, ingest_raws
from .registry.refs import DatasetType

REFCAT = DatasetType("refcat", ("field",), "Table")
RAW_RUN = "raw/all"
REFCAT_RUN = "refcats"
DEFAULTS = "demo/defaults"
SURVEY_DIR = "demo_survey"


@dataclass
class DemoRepo:
    butler: Butler
    survey_dir: Path
    truth_path: Path
    report: IngestReport

    @property
    def truth(self) -> dict:
        return json.loads(self.truth_path.read_text())


def make_demo_repo(root: str | Path, *, seed: int = 42, size: str = "small", raw: bool = False) -> DemoRepo:
    """Create (or top up) ``root`` with the demo survey; safe to run again (ingest skips what it has).

    ``raw``: the survey's raw mode (instrument signatures and calibration frames, ``docs/calibration.md``).
    """
    from .sim.survey import generate_survey

    root = Path(root)
    butler = Butler(root) if (root / "butler.yaml").exists() else Butler.create(root)
    survey_dir = butler.root / SURVEY_DIR
    truth_path = survey_dir / "truth.json"
    fresh = True
    if truth_path.exists():
        old = json.loads(truth_path.read_text())
        fresh = not (old.get("seed") == seed and old.get("size") == size and bool(old.get("raw_mode")) == raw)
        if fresh and butler.registry.query_collections(RAW_RUN):
            raise SystemExit(f"{root} already holds a demo survey made with seed {old.get('seed')}, size "
                             f"{old.get('size')}{', raw mode' if old.get('raw_mode') else ''}; use a new repository "
                             f"for seed {seed}, size {size}{', raw mode' if raw else ''}")
    if fresh:
        generate_survey(survey_dir, seed=seed, size=size, raw_mode=raw)
    truth = json.loads(truth_path.read_text())
    reg = butler.registry
    reg.sync_dimension_records("field", [{"name": f["name"], "ra": f["ra"], "dec": f["dec"]} for f in truth["fields"]])
    reg.sync_dimension_records("target", [{"name": t["name"], "field": t["field"], "ra": t["ra"], "dec": t["dec"],
                                           "kind": t["kind"]} for t in truth["targets"]])
    report = ingest_raws(butler, [survey_dir / "raw"], run=RAW_RUN, transfer="direct")
    from astropy.table import Table

    refcat = Table.read(survey_dir / "refcat.ecsv", format="ascii.ecsv")
    reg.register_dataset_type(REFCAT)
    for f in truth["fields"]:
        have = reg.query_datasets(REFCAT.name, [REFCAT_RUN], data_id={"field": f["name"]}) \
            if reg.query_collections(REFCAT_RUN) else []
        if not have:
            rows = refcat[refcat["field"] == f["name"]] if "field" in refcat.colnames else refcat
            butler.put(rows, REFCAT, {"field": f["name"]}, run=REFCAT_RUN)
    reg.set_chain(DEFAULTS, [RAW_RUN, REFCAT_RUN])
    reg.set_collection_doc(DEFAULTS, "raws and reference catalogues of the demo survey")
    return DemoRepo(butler, survey_dir, truth_path, report)
