"""``corrtomo run``, ``corrtomo demo`` and ``corrtomo config-template``."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app
from ._progress import stage_progress

_RUN_HELP = """Run the whole pipeline of CONFIG (YAML) in OUTDIR: stitch -> classify EDS -> register each
section -> transfer labels -> train phase model -> predict phases -> segment particles -> measure ->
liberation, stereology, representativeness -> report.html. Finished stages are skipped when their
inputs and parameters did not change; an interrupted run resumes. `corrtomo config-template`
prints an annotated config."""


def _finish(result, quiet: bool) -> None:
    if quiet:
        return
    ran = ", ".join(result.ran) or "none"
    typer.echo(f"stages run: {ran}; up to date: {len(result.skipped)}")
    if result.report is not None:
        typer.echo(f"report: {result.report}")


def _template_epilog() -> str:
    from ..pipeline import config_template

    # "\b" keeps click from re-wrapping each paragraph of the YAML
    paragraphs = config_template().strip().split("\n\n")
    return "Annotated configuration (corrtomo config-template):\n\n" + "\n\n".join("\b\n" + p for p in paragraphs)


@app.command("run", help=_RUN_HELP, epilog=_template_epilog())
def run_command(
    config: Path = typer.Argument(..., help="Run configuration (YAML)."),
    outdir: Path = typer.Option(None, "--out", "-o", help="Run folder (default: CONFIG's folder / run)."),
    from_stage: str | None = typer.Option(None, "--from", help="Redo this stage and all after it."),
    until: str | None = typer.Option(None, "--until", help="Stop after this stage."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or log lines (run.log is kept)."),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="Where the chunked path runs its blocks: threads, processes (a local cluster) or "
        "a dask.distributed scheduler tcp://HOST:PORT (overrides execution.scheduler)."),
    workers: int | None = typer.Option(None, "--workers", help="Parallel workers (overrides execution.workers)."),
) -> None:
    from ..pipeline import load_config, run_pipeline

    settings = load_config(config)
    outdir = outdir if outdir is not None else config.parent / "run"
    with stage_progress(quiet=quiet) as progress:
        result = run_pipeline(settings, outdir, from_stage=from_stage, until=until, quiet=quiet, progress=progress,
                              scheduler=scheduler, workers=workers)
    _finish(result, quiet)


@app.command("demo")
def demo_command(
    outdir: Path = typer.Argument(Path("corrtomo-demo"), help="Folder for the twin sample, config and run."),
    preset: str = typer.Option("talc-saxolite", "--preset", help="Twin preset: talc-saxolite | li-slag | quick, or talc-micro-nano (a micro/nano-CT pair: the nano volume is analysed, the micro volume is the overview)."),
    seed: int = typer.Option(0, "--seed", help="Twin seed."),
    shape: tuple[int, int, int] | None = typer.Option(None, "--shape", help="CT grid Z Y X (default: the preset's)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or log lines."),
) -> None:
    """Make a digital-twin sample and run the whole pipeline on it; prints where the report is."""
    from ..pipeline import run_demo

    with stage_progress(quiet=quiet) as progress:
        result = run_demo(outdir, preset=preset, seed=seed, shape=shape, quiet=quiet, progress=progress)
    _finish(result, quiet)
    if quiet and result.report is not None:
        typer.echo(str(result.report))


@app.command("config-template")
def config_template_command() -> None:
    """Print an annotated run configuration."""
    from ..pipeline import config_template

    typer.echo(config_template(), nl=False)
