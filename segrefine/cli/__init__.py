"""The `segrefine` command line: a thin layer over the Python API.

Each subcommand lives in its own module and is registered here; only working subcommands are registered.
User mistakes (click usage errors and `SegrefineError`) become one line on stderr and exit code 2; a `SettingError`
names its settings as flags (`lr` becomes `--lr`). Ctrl-C is one line too ("interrupted", or what the command says
through `Interrupted`) and exit code 130.
"""

from __future__ import annotations

import sys

import typer

from segrefine import __version__
from segrefine.cli.options import flag
from segrefine.errors import SegrefineError, SettingError

app = typer.Typer(
    name="segrefine",
    help="Semantic segmentation with Semantic and Contextual Refinement Modules.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"segrefine {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Semantic segmentation with Semantic and Contextual Refinement Modules."""


def _register() -> None:
    from segrefine.cli import datasets, export, flops, predict, train, visualize, weights
    from segrefine.cli import eval as eval_cli

    app.command("train", epilog=train.EPILOG)(train.train)
    app.command("eval")(eval_cli.evaluate)
    app.command("predict")(predict.predict)
    app.command("flops")(flops.flops)
    app.command("export")(export.export)
    app.command("datasets")(datasets.datasets)
    app.add_typer(visualize.app, name="visualize")
    app.add_typer(weights.app, name="weights")


_register()


def _fail(message: str, code: int = 2) -> None:
    line = " ".join(str(message).split())
    print(f"segrefine: error: {line}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `segrefine` console script and of `python -m segrefine`."""
    try:
        rv = app(args=argv, prog_name="segrefine", standalone_mode=False)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        _fail("aborted", 130)
    except typer.TyperException as e:  # click usage errors (typer vendors click)
        if type(e).__name__ == "NoArgsIsHelpError":
            e.show()
            sys.exit(0)
        _fail(e.format_message().replace("Value error, ", ""), getattr(e, "exit_code", 2))
    except SettingError as e:
        _fail(str(e.worded(flag)))
    except SegrefineError as e:
        _fail(str(e), getattr(e, "exit_code", 2))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    if rv == 130:  # typer turns Ctrl-C inside a command into exit code 130, silently
        _fail("interrupted", 130)
    sys.exit(rv if isinstance(rv, int) else 0)
