"""The typer application and its error handling."""

from __future__ import annotations

import importlib

import typer

from .._shared import InputError, WorkersLostError

app = typer.Typer(
    name="corrtomo",
    help="Correlative 3D mineralogy of particle systems: X-ray CT + SEM sections -> phases, "
    "particles, liberation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command modules; each registers its commands on `app` when imported.
_COMMAND_MODULES = ("_synth", "_info", "_analyze", "_register", "_sem", "_stitch", "_segment", "_segment_particles", "_segment_refine", "_segment_unet", "_model",
                    "_run", "_volume_pair")


@app.callback(invoke_without_command=True)
def _root(
    context: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from .. import __version__

        typer.echo(__version__)
        raise typer.Exit(0)
    if context.invoked_subcommand is None:
        typer.echo(context.get_help())
        raise typer.Exit(0)


def _load_commands() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}")


def run_app(argv: list[str]) -> int:
    """Run the CLI on `argv`; return the exit code (2 for bad input)."""
    _load_commands()
    try:
        app(args=argv, prog_name="corrtomo", standalone_mode=False)
    except InputError as error:
        typer.echo(f"corrtomo: error: {error}", err=True)
        return 2
    except FileNotFoundError as error:
        typer.echo(f"corrtomo: error: {error.filename or ''}: file not found", err=True)
        return 2
    except typer.Exit as exit_:
        return int(exit_.exit_code or 0)
    except typer.Abort:
        typer.echo("corrtomo: aborted", err=True)
        return 130
    except KeyboardInterrupt:
        typer.echo("corrtomo: interrupted; finished outputs are kept, re-run to resume", err=True)
        return 130
    except WorkersLostError as error:
        typer.echo(f"corrtomo: error: {error}", err=True)
        return 1
    except Exception as error:
        # click's usage errors (typer may vendor its own click): they know how to show themselves
        if hasattr(error, "show") and hasattr(error, "exit_code"):
            error.show()
            return int(error.exit_code or 2)
        raise
    return 0
