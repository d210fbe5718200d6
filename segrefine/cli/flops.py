"""`segrefine flops`: parameters, GMACs and GFLOPs of the inference network, per module."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table

from segrefine.cli.options import flag_settings, parse_size, with_config_flags
from segrefine.hub.flops import count_flops
from segrefine.models import ModelConfig

_NOT_FLAGS = ("aux",)  # training-only: never counted


def flops(
    size: Annotated[str, typer.Option("--size", help="Input size HxW.")] = "1024x2048",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    **values: Any,
) -> None:
    """Count params, GMACs (what papers print as FLOPs) and GFLOPs of the eval-mode network."""
    height, width = parse_size(size, "--size")
    config = ModelConfig(**flag_settings(values, (ModelConfig,), _NOT_FLAGS))
    report = count_flops(config, (height, width))
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
        return
    console = Console()
    summary = Table(title=f"segrefine {config.variant} at 1×3×{height}×{width}", show_header=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    summary.add_row("params", f"{report.params / 1e6:.2f} M")
    summary.add_row("GMACs", f"{report.gmacs:.2f}")
    summary.add_row("GFLOPs (2 × GMACs)", f"{report.gflops:.2f}")
    switches = {k: v for k, v in config.to_dict().items() if k not in ("variant", "aux")}
    summary.add_row("switches", " ".join(f"{k}={v}" for k, v in switches.items()))
    console.print(summary)
    modules = Table("module", Column("GMACs", justify="right"), Column("share", justify="right"), title="per module")
    for name, gmacs in report.modules.items():
        modules.add_row(name, f"{gmacs:.2f}", f"{100 * gmacs / report.gmacs:.1f}%")
    console.print(modules)
    console.print("Not counted: " + ", ".join(report.uncounted) + ". Auxiliary heads are training-only and excluded.")


with_config_flags(flops, (ModelConfig,), _NOT_FLAGS)
