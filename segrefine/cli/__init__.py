"""The `segrefine` command line: a thin layer over the Python API.

Each subcommand lives in its own module and is registered here; only working subcommands are registered.
User mistakes (click usage errors and `SegrefineError`) become one line on stderr and exit code 2; a `SettingError`
names its settings as flags (`lr` becomes `--lr`). Ctrl-C is one line too ("interrupted", or what the command says
through `Interrupted`) and exit code 130.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, NamedTuple

import typer
import typer.core
import typer.main

from segrefine import __version__
from segrefine.errors import SegrefineError, SettingError, flag, one_line


class Subcommand(NamedTuple):
    attribute: str  # in module segrefine.cli.<name>: a command function, or a typer.Typer of subcommands
    help: str  # the line in `segrefine --help`


COMMANDS: dict[str, Subcommand] = {
    "train": Subcommand("train", "Train a model on a dataset (CPU, one GPU, or torchrun)."),
    "eval": Subcommand("evaluate", "Score a model or saved predictions on a dataset split."),
    "predict": Subcommand("predict", "Segment images, folders, globs and videos."),
    "export": Subcommand("export", "Export a model to ONNX (fp32 or int8) for onnxruntime."),
    "flops": Subcommand("flops", "Count parameters and multiply-accumulates of a model."),
    "datasets": Subcommand("datasets", "List the dataset adapters and their recipes."),
    "visualize": Subcommand("app", "Draw offsets, attention, memory, samples and errors."),
    "weights": Subcommand("app", "List, pull and push trained weights."),
    "serve": Subcommand("serve", "Serve a model over HTTP, with a page to try it in a browser."),
}


def load_command(name: str) -> Any:
    """The click command of a subcommand, importing its module (and so torch) only now."""
    module = importlib.import_module(f"segrefine.cli.{name}")
    target = getattr(module, COMMANDS[name].attribute)
    if isinstance(target, typer.Typer):
        return _without_flag_placeholders(typer.main.get_group(target))
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False, context_settings=CONTEXT)
    single.command(name, epilog=getattr(module, "EPILOG", None))(target)
    return _without_flag_placeholders(typer.main.get_command(single))


def _flags_without_placeholder(params: list[Any]) -> list[Any]:
    """Typer's help shows `<bool>` after a flag as if it took a value: an empty metavar shows nothing."""
    for param in params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    return params


def _without_flag_placeholders(command: Any) -> Any:
    """`command` and its subcommands with `_flags_without_placeholder`, their help options included."""
    # click creates the help option once, for the first context that asks: this one, with our option names.
    _flags_without_placeholder(command.get_params(typer.Context(command, **CONTEXT)))
    for subcommand in getattr(command, "commands", {}).values():
        _without_flag_placeholders(subcommand)
    return command


class LazyGroup(typer.core.TyperGroup):
    """The root command: lists subcommands from COMMANDS and imports one only to run it or show its help."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, name: str) -> Any:
        if name not in COMMANDS:
            return None
        # A stand-in carrying the one-line help: enough to list and resolve the name without importing it.
        return typer.core.TyperCommand(name, help=COMMANDS[name].help)

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_without_placeholder(super().get_params(ctx))

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[Any, Any, list[str]]:
        name, _, rest = super().resolve_command(ctx, args)
        return name, load_command(name), rest


CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    cls=LazyGroup,
    name="segrefine",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=CONTEXT,
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


def _fail(message: str, code: int = 2) -> None:
    print(f"segrefine: error: {one_line(message)}", file=sys.stderr)
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
        # By name, as typer itself does: its class lives in typer's private vendored click (typer._click), and in
        # click for the older typers pyproject allows; neither exports it publicly.
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
