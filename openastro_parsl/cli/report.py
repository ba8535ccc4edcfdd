"""`openastro-report RUN_DIR` (what happened, what failed and why) and `openastro-status RUN_DIR` (live counts)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from ..errors import OpenAstroError
from ..execution.report import find_quantum, open_run, report_json, run_state, write_html
from ..execution.status import STATES
from .common import console, user_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--failed", is_flag=True, help="Only the failed quanta, with error, log tail and log paths.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False),
              help="Write the report as one self-contained HTML page: timeline per worker, CPU and memory per task, "
                   "failures with log tails.")
@click.option("--log", "log", nargs=2, metavar="TASK DATA_ID", help="Print one quantum's log, e.g. --log calibrate \"exposure=1042\".")
@click.option("--lines", default=20, show_default=True, help="Log lines to show per failure.")
@user_errors
def main(run_dir, failed, as_json, html_out, log, lines) -> None:
    """Report on a run directory of openastro-submit."""
    run_dir = Path(run_dir)
    if log:
        task, text = log
        status = open_run(run_dir)
        hits = find_quantum(status, task, text)
        if not hits:
            raise OpenAstroError(f"no {task} quantum matches {text!r} in this run")
        for row in hits[:5]:
            console.print(Text.assemble((row["task"], "bold"), f" {row['data_id']} state={row['state']} "
                                        f"quantum={row['id']}"))
            for key in ("stderr", "stdout"):
                path = Path(row[key])
                console.print(f"--- {key}: {path}")
                if path.exists():
                    sys.stdout.write(path.read_text(errors="replace"))
                    sys.stdout.flush()
        if len(hits) > 5:
            console.print(f"... and {len(hits) - 5} more quanta match; narrow the data ID")
        return
    data = report_json(run_dir, lines)
    if html_out:
        console.print(f"wrote {write_html(run_dir, Path(html_out))}")
    if as_json:
        if failed:
            data = {"failed": data["failed"]}
        click.echo(json.dumps(data, indent=1, default=str))
        return
    if not failed:
        table = Table("task", *STATES, "wall s", "CPU s", "peak MB", title=f"run {data['output_run']} ({data['state']})")
        for label, t in data["per_task"].items():
            table.add_row(label, *[str(t[s]) for s in STATES], f"{t['wall_s']:.1f}", f"{t['cpu_s']:.1f}",
                          f"{t['peak_mb']:.0f}")
        console.print(table)
        if data["workers"]:
            busiest = max(data["workers"], key=lambda w: w["busy_s"])
            console.print(f"{len(data['quanta'])} quanta ran on {len(data['workers'])} workers; busiest "
                          f"{busiest['row']}: {busiest['quanta']} quanta, {busiest['busy_s']:.1f} s (timeline: --html)",
                          soft_wrap=True)
        for task, reasons in data["no_work"].items():
            for reason, n in reasons.items():
                console.print(f"no work: {task} x{n}: {reason}", soft_wrap=True)
    if not data["failed"]:
        console.print("no failed quanta")
        return
    console.print(Text(f"{len(data['failed'])} failed quanta", style="red"))
    for f in data["failed"]:
        did = ", ".join(f"{k}={v}" for k, v in f["data_id"].items())
        console.print(Text.assemble("\n", (f["task"], "bold"), f" {{{did}}} [{f['kind']}] {f['message']}"))
        console.print(f"  attempts {f['attempts']}, host {f['host']}, slurm job {f['slurm_job_id'] or '-'}")
        console.print(f"  stderr: {f['logs']['stderr']}\n  stdout: {f['logs']['stdout']}\n  records: {f['logs']['jsonl']}")
        for line in f["stderr_tail"]:
            console.print(f"    | {line}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@user_errors
def status_main(run_dir) -> None:
    """Per-task x per-state counts of a run, live while it goes."""
    status = open_run(run_dir)
    counts = status.counts()
    table = Table("task", *STATES, title=f"{status.meta('output_run')} — {run_state(status)}")
    total = {s: 0 for s in STATES}
    for task, c in counts.items():
        table.add_row(task, *[str(c[s]) for s in STATES])
        for s in STATES:
            total[s] += c[s]
    table.add_section()
    table.add_row("total", *[str(total[s]) for s in STATES])
    console.print(table)
