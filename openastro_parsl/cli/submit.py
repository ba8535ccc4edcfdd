"""`openastro-submit`: plan (or load) a quantum graph and run it on Parsl, locally or on SLURM."""

from __future__ import annotations

import signal
import sys

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..butler import Butler
from ..execution.site import load_site
from ..execution.submit import Submission
from ..graph.quantum_graph import QuantumGraph
from .common import console, err_console, user_errors
from .plan import build_graph, pipeline_options, print_counts


def print_summary(summary) -> None:
    """Print a run's summary table, then how to finish the run when it stopped, was interrupted or failed."""
    table = Table("task", "succeeded", "no work", "failed", "upstream failed", "skipped", "pending", "wall s", "cpu s",
                  "peak MB", title=f"run {summary.output_run}")
    for label, t in summary.per_task.items():
        table.add_row(label, str(t["succeeded"]), str(t["no_work"]), str(t["failed"]), str(t["upstream_failed"]),
                      str(t["skipped"]),
                      str(t["pending"] + t["running"]), f"{t['wall_s']:.1f}", f"{t['cpu_s']:.1f}", f"{t['peak_mb']:.0f}")
    console.print(table)
    if summary.failures_by_kind:
        console.print("failures by kind: " + ", ".join(f"{k}={v}" for k, v in summary.failures_by_kind.items()))
    console.print(f"run directory: {summary.run_dir}")
    console.print(f"summary: {summary.run_dir / 'summary.json'}")
    if summary.extra.get("stopped"):
        err_console.print(f"error: the run stopped: {summary.extra['stopped']}. Quanta that finished are registered; "
                          f"free some space, then finish it with `openastro-submit --resume {summary.run_dir}`",
                          soft_wrap=True)
    elif summary.extra.get("interrupted"):
        left = sum(t["pending"] + t["running"] for t in summary.per_task.values())
        err_console.print(Text.assemble((f"interrupted ({summary.extra['interrupted']})", "yellow"),
                                         f": {left} quanta not run, the run is marked interrupted and nothing "
                                         f"registered is lost; finish it with `openastro-submit --resume "
                                         f"{summary.run_dir}`"), soft_wrap=True)
    elif not summary.ok:
        console.print(Text.assemble(("not everything succeeded", "red"),
                                    f": see `openastro-report {summary.run_dir} --failed`; rerun what is left "
                                    f"with `openastro-submit --resume {summary.run_dir}`"))


def _on_failure(info: dict) -> None:
    did = ", ".join(f"{k}={v}" for k, v in info["data_id"].items())
    err_console.print(Text.assemble(("FAILED", "red"), f" {info['task']} {{{did}}} [{info['kind']}] "
                                                       f"{info['message'][:300]}\n       log: {info['stderr']}"),
                      soft_wrap=True)


def _notice(message: str) -> None:
    err_console.print(f"note: {message}", soft_wrap=True)


def run_submission(sub: Submission) -> int:
    """Run a submission with a live progress bar and print its summary; return the exit status."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[counts]}"),
                  TimeElapsedColumn(), console=console, transient=False, disable=not console.is_terminal) as progress:
        bar = progress.add_task("quanta", total=len(sub.graph.quanta), counts="")

        def update(counts: dict[str, int], total: int) -> None:
            done = sum(counts[s] for s in ("succeeded", "no_work", "failed", "upstream_failed", "skipped"))
            progress.update(bar, completed=done, counts=f"ok {counts['succeeded']} · running {counts['running']} · "
                                                        f"failed {counts['failed']} · blocked {counts['upstream_failed']}")

        sub.progress = update
        sub.on_failure = _on_failure
        console.print(f"run directory: {sub.run_dir} (site {sub.site_source})")
        summary = sub.run()
    print_summary(summary)
    if summary.extra.get("interrupted"):
        return 128 + signal.Signals[summary.extra["interrupted"]]  # as a shell reports a process the signal ended
    return 0 if summary.ok else 1


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@pipeline_options
@click.option("--qgraph", type=click.Path(exists=True, dir_okay=False), help="Run a graph saved by openastro-plan.")
@click.option("--site", type=click.Path(exists=True, dir_okay=False), help="Site config (default: site_configs/local.yaml).")
@click.option("--resume", "--rerun-failed", "resume", type=click.Path(exists=True, file_okay=False),
              help="Run directory to resume: reruns only what did not succeed.")
@click.option("--save-qgraph", type=click.Path(dir_okay=False), help="Also save the planned graph here.")
@user_errors
def main(repo, pipeline_spec, inputs, output_run, where, bind, overrides, override_files, skip_existing_in,
         clobber_outputs, qgraph, site, resume, save_qgraph) -> None:
    """Run a pipeline (or a saved graph) through Parsl; per-quantum logs and a summary in the run directory."""
    site_cfg, site_source = load_site(site) if site or not resume else (None, None)
    notify = _notice
    if resume:
        sub = Submission.resume(resume, site_cfg, site_source, notify=notify)
        console.print(f"resuming {sub.run_dir}")
    else:
        if qgraph:
            graph = QuantumGraph.load(qgraph)
            butler = Butler(repo or graph.header["repo"])
        else:
            butler, _, planner = build_graph(repo, pipeline_spec, inputs, output_run, where, bind, overrides,
                                             override_files, skip_existing_in, clobber_outputs)
            graph = planner.plan()
            if save_qgraph:
                graph.save(save_qgraph)
        print_counts(graph)
        assert site_cfg is not None and site_source is not None  # loaded above whenever not resuming
        sub = Submission.start(butler, graph, site_cfg, site_source, notify=notify,
                               graph_source=f"quantum graph {qgraph}" if qgraph else "the quantum graph")
    sys.exit(run_submission(sub))
