"""`segrefine flops`: parameters, GMACs and GFLOPs of the inference network, per module."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from segrefine.cli.options import CrmMode, SrmKernel, SrmMask, SrmMode, Variant, parse_size
from segrefine.models.flops import count_flops
from segrefine.models import ModelConfig

VARIANT = typer.Option("--variant", help="Network variant.")
SRM = typer.Option("--srm", help="SRM: plain bilinear upsampling, flow offsets only, or full (mask-weighted).")
SRM_KERNEL = typer.Option("--srm-kernel", help="SRM neighbourhood size k.")
SRM_MASK = typer.Option("--srm-mask", help="SRM mask activation.")
CRM = typer.Option("--crm", help="CRM: off, CBAM-style gate, or channel-then-spatial attention.")
MEMORY = typer.Option("--memory/--no-memory", help="Add the MCIBI class-memory block.")


def flops(
    variant: Annotated[Variant, VARIANT] = "lite",
    size: Annotated[str, typer.Option("--size", help="Input size HxW.")] = "1024x2048",
    num_classes: Annotated[int, typer.Option("--num-classes", min=1, help="Number of classes.")] = 19,
    memory: Annotated[bool, MEMORY] = False,
    srm: Annotated[SrmMode, SRM] = "full",
    srm_kernel: Annotated[SrmKernel, SRM_KERNEL] = "3",
    srm_mask: Annotated[SrmMask, SRM_MASK] = "softmax",
    crm: Annotated[CrmMode, CRM] = "attention",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Count params, GMACs (what papers print as FLOPs) and GFLOPs of the eval-mode network."""
    height, width = parse_size(size, "--size")
    config = ModelConfig(
        variant=variant, num_classes=num_classes, memory=memory, srm=srm, srm_kernel=int(srm_kernel),
        srm_mask=srm_mask, crm=crm,
    )
    report = count_flops(config, (height, width))
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
        return
    console = Console()
    summary = Table(title=f"segrefine {variant} at 1×3×{height}×{width}", show_header=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    summary.add_row("params", f"{report.params / 1e6:.2f} M")
    summary.add_row("GMACs", f"{report.gmacs:.2f}")
    summary.add_row("GFLOPs (2 × GMACs)", f"{report.gflops:.2f}")
    summary.add_row("switches", f"srm={srm} k={srm_kernel} mask={srm_mask} crm={crm} memory={'on' if memory else 'off'}")
    console.print(summary)
    modules = Table(title="per module")
    modules.add_column("module")
    modules.add_column("GMACs", justify="right")
    modules.add_column("share", justify="right")
    for name, gmacs in report.modules.items():
        modules.add_row(name, f"{gmacs:.2f}", f"{100 * gmacs / report.gmacs:.1f}%")
    console.print(modules)
    console.print("Not counted: " + ", ".join(report.uncounted) + ". Auxiliary heads are training-only and excluded.")
