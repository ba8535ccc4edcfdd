"""`openastro-demo REPO`: make the synthetic survey, ingest it, and say what is there."""

from __future__ import annotations

import time

import click
from rich.table import Table
from rich.text import Text

from ..demo import DEFAULTS, make_demo_repo
from .common import console, user_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("repo", type=click.Path())
@click.option("--seed", default=42, show_default=True, help="Random seed: the same seed makes the same survey.")
@click.option("--size", type=click.Choice(["small", "medium"]), default="small", show_default=True)
@click.option("--raw", is_flag=True, help="Raw mode: frames carry bias, dark current and flat field, and each camera's "
                                          "bias, dark and flat frames are ingested too (docs/calibration.md).")
@click.option("--asteroids", type=click.IntRange(0, 20), default=0, show_default=True,
              help="Minor planets crossing the field after the template epochs; their orbit file is registered as "
                   "`mpcorb` for alert vetting (docs/vetting.md).")
@click.option("--standard-field", is_flag=True, help="Each camera also observes a standard field (std1) the night "
              "after the season, to measure its colour terms with `openastro-butler colour-terms` (docs/zeropoints.md).")
@user_errors
def main(repo: str, seed: int, size: str, raw: bool, asteroids: int, standard_field: bool) -> None:
    """Write a synthetic survey with known truth into REPO and ingest it as raws."""
    t0 = time.perf_counter()
    demo = make_demo_repo(repo, seed=seed, size=size, raw=raw, asteroids=asteroids, standard_field=standard_field)
    truth = demo.truth
    console.print(f"demo survey (seed {seed}, size {size}) in {demo.survey_dir}; truth: {demo.truth_path}")
    console.print(demo.report.summary())
    for path, reason in demo.report.quarantined:
        console.print(Text.assemble("  ", ("quarantined", "yellow"), f" {path.name}: {reason}"))
    table = Table("instrument", "band", "exposures", title="raws")
    counts: dict[tuple[str, str], int] = {}
    for ref in demo.butler.query_datasets("raw", DEFAULTS):
        key = (ref.data_id["instrument"], ref.data_id["band"])
        counts[key] = counts.get(key, 0) + 1
    for (inst, band), n in sorted(counts.items()):
        table.add_row(inst, band, str(n))
    console.print(table)
    if raw:
        calib = Table("instrument", "bias", "dark", "flat", title="calibration frames")
        per: dict[str, dict[str, int]] = {}
        for kind in ("bias", "dark", "flat"):
            for ref in demo.butler.query_datasets(kind, DEFAULTS):
                per.setdefault(ref.data_id["instrument"], {}).setdefault(kind, 0)
                per[ref.data_id["instrument"]][kind] += 1
        for inst, kinds in sorted(per.items()):
            calib.add_row(inst, *(str(kinds.get(k, 0)) for k in ("bias", "dark", "flat")))
        console.print(calib)
        console.print(f"next: openastro-submit -b {repo} -p pipelines/calib.yaml -i {DEFAULTS} -o calib/masters, then "
                      f"openastro-butler certify-calibrations {repo} calib/masters calib/all --begin YYYYMMDD --end "
                      "YYYYMMDD (docs/calibration.md)")
    console.print(f"targets: {', '.join(t['name'] + ' (' + t['kind'] + ')' for t in truth['targets'])}")
    for f in truth["fields"]:
        if f.get("standard"):
            console.print(f"standard field {f['name']}: calibrate it (pipelines/image.yaml#calibration -d \"field = "
                          f"'{f['name']}'\"), then openastro-butler colour-terms {repo} --collections RUN --write FILE "
                          "and plan the science with -C fieldCalibration:FILE (docs/zeropoints.md)")
    if truth.get("asteroids"):
        bodies = truth["asteroids"]["bodies"]
        console.print(f"asteroids: {', '.join(b['designation'] for b in bodies)} (orbits in "
                      f"{demo.survey_dir / truth['asteroids']['file']}, registered as mpcorb in run orbits)")
    console.print(Text.assemble("input collection for pipelines: ", (DEFAULTS, "bold"),
                                f" ({time.perf_counter() - t0:.1f} s)"))
