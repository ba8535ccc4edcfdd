"""`openastro-serve`: the live service on a repository (docs/live.md; README "Live mode")."""

from __future__ import annotations

import click

from ..butler import Butler
from ..errors import OpenAstroError
from .common import console, user_errors


def parse_gather(items: tuple[str, ...]) -> dict[str, dict[str, float | None]]:
    """``("coadd:after=5,every_s=300",)`` -> ``{"coadd": {"after": 5, "every_s": 300.0}}``; ``none`` switches one off."""
    out: dict[str, dict[str, float | None]] = {}
    for item in items:
        label, sep, rest = item.partition(":")
        rule: dict[str, float | None] = {}
        for part in filter(None, rest.split(",")):
            key, eq, value = part.partition("=")
            if not eq or key.strip() not in ("after", "every_s", "max_versions"):
                raise OpenAstroError(f"--gather {item!r}: expected TASK:after=N,every_s=S (either or both)")
            try:
                rule[key.strip()] = None if value.strip().lower() == "none" else float(value)
            except ValueError:
                raise OpenAstroError(f"--gather {item!r}: {key.strip()} must be a number or none") from None
        if not sep or not label.strip() or not rule:
            raise OpenAstroError(f"--gather {item!r}: expected TASK:after=N,every_s=S (either or both)")
        for whole in ("after", "max_versions"):  # counts (live/gather.py GatherRule)
            if rule.get(whole) is not None:
                rule[whole] = int(rule[whole] or 0)
        out[label.strip()] = rule
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("repo", type=click.Path(exists=True, file_okay=False))
@click.option("--pipeline", "-p", help="Pipeline and subsets run on every frame, e.g. "
              "pipelines/openastro.yaml#transient; without it frames are only ingested.")
@click.option("--site", help="Site config YAML (default: the local site).")
@click.option("--name", default="default", show_default=True,
              help="The service's name: its inbox REPO/live/NAME and its collection live/NAME.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8750, show_default=True, type=int)
@click.option("--config", "-c", "overrides", multiple=True, metavar="LABEL:KEY=VALUE",
              help="Task config override for the live pipeline (repeatable).")
@click.option("--max-body-mb", default=256.0, show_default=True, type=float, help="Largest upload accepted.")
@click.option("--raw-run", default="raw/all", show_default=True, help="RUN collection frames are ingested into.")
@click.option("--inputs", "-i", help="Comma-separated input collections of the live pipeline (default: --raw-run, "
              "then 'defaults' when the repository has it).")
@click.option("--gather", multiple=True, metavar="TASK:after=N,every_s=S",
              help="When a gathering task (co-add, light curve, ...) re-runs: after N new inputs and/or S seconds after "
              "its last version (repeatable), e.g. --gather templateCoadd:after=5,every_s=300.")
@click.option("--batch-window", default=0.5, show_default=True, type=float,
              help="Seconds to wait after an upload for the rest of a burst (one plan for all of it).")
@user_errors
def main(repo: str, pipeline: str | None, site: str | None, name: str, host: str, port: int,
         overrides: tuple[str, ...], max_body_mb: float, raw_run: str, inputs: str | None, gather: tuple[str, ...],
         batch_window: float) -> None:
    """Serve REPO live: frames POSTed to /frames are ingested and processed as they arrive."""
    import uvicorn

    from ..live.service import LiveService
    from ..live.tokens import TokenStore, check_site_name

    check_site_name(name, "--name")
    engine = None
    if pipeline:
        from ..live.engine import LiveEngine

        chosen = [c.strip() for c in inputs.split(",") if c.strip()] if inputs else None
        if chosen is None and raw_run != "raw/all":  # the engine's own default reads raw/all
            chosen = [raw_run, *(["defaults"] if Butler(repo).registry.has_collection("defaults") else [])]
        engine = LiveEngine(repo, pipeline, site, name, config_overrides=list(overrides), gather=parse_gather(gather),
                            inputs=chosen)
    service = LiveService(repo, name, engine, max_body=int(max_body_mb * 1024 * 1024), raw_run=raw_run,
                          batch_window=batch_window)
    sites = TokenStore(service.butler.root).sites()
    if not sites:
        console.print(f"note: no site tokens yet; every upload is refused until `openastro-butler add-token {repo} "
                      f"SITE`")
    console.print(f"live service {name} on {service.butler.root}: http://{host}:{port}/ (sites: "
                  f"{', '.join(sites) or 'none'}; pipeline: {pipeline or 'none, ingest only'})")
    uvicorn.run(service.app(), host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
