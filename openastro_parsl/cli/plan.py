"""`openastro-plan`: build the quantum graph of a pipeline over a repository, show it, save it."""

from __future__ import annotations

import time

import click
import yaml
from rich.table import Table
from rich.text import Text

from ..butler import Butler
from ..graph.planner import Planner
from ..pipeline.pipeline import load_pipeline
from .common import console, parse_binds, user_errors


def pipeline_options(fn):
    """Options shared by openastro-plan and openastro-submit."""
    for opt in reversed([
        click.option("-b", "--butler", "repo", type=click.Path(), help="Repository."),
        click.option("-p", "--pipeline", "pipeline_spec", help="Pipeline YAML, optionally file.yaml#subset,label."),
        click.option("-i", "--input", "inputs", multiple=True, help="Input collection(s), comma-separated or repeated."),
        click.option("-o", "--output-run", "output_run", help="Output RUN collection, e.g. u/alice/run1."),
        click.option("-d", "--data-query", "where", default="", help="where expression selecting data IDs."),
        click.option("--bind", multiple=True, help="Bind value for -d: name=value (repeatable)."),
        click.option("-c", "--config", "overrides", multiple=True, help="Config override label:key=value."),
        click.option("-C", "--config-file", "override_files", multiple=True, help="Config override file label:file.yaml."),
        click.option("--skip-existing-in", multiple=True, help="Skip quanta whose outputs all exist in these collections."),
        click.option("--clobber-outputs", is_flag=True, help="Replace partial outputs already in the output run."),
    ]):
        fn = opt(fn)
    return fn


def _split(values) -> list[str]:
    return [x.strip() for v in values for x in v.split(",") if x.strip()]


def build_graph(repo, pipeline_spec, inputs, output_run, where, bind, overrides, override_files,
                skip_existing_in, clobber_outputs):
    """The butler, pipeline and planner the shared planning options describe (openastro-plan and -submit)."""
    for name, value in (("-b/--butler", repo), ("-p/--pipeline", pipeline_spec), ("-o/--output-run", output_run)):
        if not value:
            raise click.UsageError(f"{name} is required")
    pipeline = load_pipeline(pipeline_spec, overrides, override_files)
    butler = Butler(repo)
    planner = Planner(butler, pipeline, inputs=_split(inputs), output_run=output_run, where=where,
                      binds=parse_binds(bind), skip_existing_in=_split(skip_existing_in),
                      clobber_outputs=clobber_outputs, pipeline_spec=pipeline_spec)
    return butler, pipeline, planner


def print_counts(graph, planner=None) -> None:
    """Print the quanta per task of a planned graph (and, with --skip-existing-in, those already done)."""
    table = Table("task", "quanta", *(["skipped (done)"] if planner and planner.skip_existing_in else []),
                  title=f"quantum graph for {graph.output_run}")
    counts = graph.counts_by_task()
    for label, n in counts.items():
        extra = [str(planner.reports[label].skipped_existing)] if planner and planner.skip_existing_in else []
        table.add_row(label, str(n), *extra)
    table.add_section()
    table.add_row("total", str(sum(counts.values())), *([""] if planner and planner.skip_existing_in else []))
    console.print(table)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@pipeline_options
@click.option("--save-qgraph", type=click.Path(dir_okay=False), help="Save the graph to this file.")
@click.option("--qgraph-dot", type=click.Path(dir_okay=False), help="Write the quantum graph as DOT (.dot/.svg/.png).")
@click.option("--pipeline-dot", type=click.Path(dir_okay=False), help="Write the pipeline as DOT (.dot/.svg/.png).")
@click.option("--show", multiple=True, type=click.Choice(["config", "graph", "tasks"]), help="Print more.")
@click.option("--explain", help="For one data ID (e.g. \"exposure=1042\"), which quanta it feeds, or why none.")
@user_errors
def main(repo, pipeline_spec, inputs, output_run, where, bind, overrides, override_files, skip_existing_in,
         clobber_outputs, save_qgraph, qgraph_dot, pipeline_dot, show, explain) -> None:
    """Build the quantum graph: one quantum per task per data ID, checked against the registry."""
    from ..graph import dot as dotviz

    if "config" in show and pipeline_spec:
        pipeline = load_pipeline(pipeline_spec, overrides, override_files)
        for t in pipeline:
            console.print(Text.assemble((t.label, "bold"), f" ({t.class_path}, config hash {t.config_hash})"))
            console.print(yaml.safe_dump(t.config.model_dump(mode="json"), sort_keys=False).rstrip())
        if not repo:
            return
    if "tasks" in show and pipeline_spec:
        pipeline = load_pipeline(pipeline_spec, overrides, override_files)
        for t in pipeline:
            conns = "; ".join(f"{c.kind} {c.name}={c.dataset_type}{'[]' if c.multiple else ''}"
                              for c in t.connections.values())
            console.print(Text.assemble((t.label, "bold"), f" dims=({', '.join(t.dimensions)}): {conns}"))
    if pipeline_dot and pipeline_spec:
        written = dotviz.write(dotviz.pipeline_dot(load_pipeline(pipeline_spec, overrides, override_files)), pipeline_dot)
        console.print(f"pipeline graph written to {written}")
    butler, pipeline, planner = build_graph(repo, pipeline_spec, inputs, output_run, where, bind, overrides,
                                            override_files, skip_existing_in, clobber_outputs)
    t0 = time.perf_counter()
    graph = planner.plan()
    elapsed = time.perf_counter() - t0
    print_counts(graph, planner)
    console.print(f"planned in {elapsed:.2f} s")
    if explain:
        from ..graph.explain import explain_data_id

        console.print(explain_data_id(graph, planner, explain))
    if "graph" in show:
        console.print(dotviz.text_tree(graph))
    if save_qgraph:
        t0 = time.perf_counter()
        graph.save(save_qgraph)
        console.print(f"saved {len(graph)} quanta to {save_qgraph} ({time.perf_counter() - t0:.2f} s)")
    if qgraph_dot:
        written = dotviz.write(dotviz.quantum_graph_dot(graph), qgraph_dot)
        console.print(f"quantum graph written to {written}")
