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


def make_demo_repo(root: str | Path, *, seed: int = 42, size: str = "small", raw: bool = False,
                   asteroids: int = 0, standard_field: bool = False) -> DemoRepo:
    """Create (or top up) ``root`` with the demo survey; safe to run again (ingest skips what it has).

    ``raw``: the survey's raw mode (instrument signatures and calibration frames, ``docs/calibration.md``).
    ``asteroids``: that many minor planets cross the field; their orbit file is registered as ``mpcorb`` in the
    ``orbits`` run, which the default chain then searches (``docs/vetting.md``).
    ``standard_field``: the cameras also observe a standard field (``std1``) the night after the season, from
    which ``openastro-butler colour-terms`` measures their colour terms (docs/zeropoints.md).
    """
    from .sim.survey import generate_survey

    root = Path(root)
    butler = Butler(root) if (root / "butler.yaml").exists() else Butler.create(root)
    survey_dir = butler.root / SURVEY_DIR
    truth_path = survey_dir / "truth.json"
    fresh = True
    if truth_path.exists():
        old = json.loads(truth_path.read_text())
        n_old = len(old.get("asteroids", {}).get("bodies", []))
        std_old = any(f.get("standard") for f in old.get("fields", []))
        fresh = not (old.get("seed") == seed and old.get("size") == size and bool(old.get("raw_mode")) == raw
                     and n_old == asteroids and std_old == standard_field)
        if fresh and butler.registry.query_collections(RAW_RUN):
            raise SystemExit(f"{root} already holds a demo survey made with seed {old.get('seed')}, size "
                             f"{old.get('size')}{', raw mode' if old.get('raw_mode') else ''}"
                             f"{f', {n_old} asteroids' if n_old else ''}{', a standard field' if std_old else ''}; "
                             f"use a new repository for seed {seed}, size {size}{', raw mode' if raw else ''}"
                             f"{f', {asteroids} asteroids' if asteroids else ''}"
                             f"{', a standard field' if standard_field else ''}")
    if fresh:
        generate_survey(survey_dir, seed=seed, size=size, raw_mode=raw, asteroids=asteroids,
                        standard_field=standard_field)
    truth = json.loads(truth_path.read_text())
    reg = butler.registry
    reg.sync_dimension_records("field", [{"name": f["name"], "ra": f["ra"], "dec": f["dec"]} for f in truth["fields"]])
    reg.sync_dimension_records("target", [{"name": t["name"], "field": t["field"], "ra": t["ra"], "dec": t["dec"],
                                           "kind": t["kind"]} for t in truth["targets"]])
    report = ingest_raws(butler, [survey_dir / "raw"], run=RAW_RUN, transfer="direct")
    from astropy.table import Table

    refcat = Table.read(survey_dir / "refcat.ecsv", format="ascii.ecsv")
    reg.register_dataset_type(REFCAT)
    standards = {f["name"] for f in truth["fields"] if f.get("standard")}
    for f in truth["fields"]:
        have = reg.query_datasets(REFCAT.name, [REFCAT_RUN], data_id={"field": f["name"]}) \
            if reg.query_collections(REFCAT_RUN) else []
        if not have:
            butler.put(_field_rows(refcat, truth, f["name"], standards), REFCAT, {"field": f["name"]}, run=REFCAT_RUN)
    chain = [RAW_RUN, REFCAT_RUN]
    if truth.get("asteroids"):
        from .astro.mpcorb import read_mpcorb
        from .ingest.orbits import MPCORB, ORBITS_RUN, register_orbits

        if not (reg.query_collections(ORBITS_RUN) and reg.get_dataset_type(MPCORB.name, missing_ok=True)
                and reg.query_datasets(MPCORB.name, [ORBITS_RUN], data_id={})):
            register_orbits(butler, read_mpcorb(survey_dir / truth["asteroids"]["file"]), run=ORBITS_RUN, chain=None)
        chain.append(ORBITS_RUN)
    reg.set_chain(DEFAULTS, chain)
    reg.set_collection_doc(DEFAULTS, "raws and reference catalogues of the demo survey")
    return DemoRepo(butler, survey_dir, truth_path, report)


def _field_rows(refcat, truth: dict, name: str, standards: set[str]):
    """A field's catalogue: a standard field's own stars; a science field the whole catalogue but the standard
    fields' stars (as a survey catalogue would hold every star around it)."""
    if not standards:
        return refcat
    import numpy as np

    if name in standards:
        keep = {s["id"] for s in truth["stars"] if s["field"] == name}
    else:
        keep = {s["id"] for s in truth["stars"] if s["field"] not in standards}
    return refcat[np.isin(refcat["id"], sorted(keep))]
