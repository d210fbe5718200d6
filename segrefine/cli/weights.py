"""`segrefine weights`: the model zoo registry, Hub downloads (pull) and uploads (push)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Column, Table

from segrefine.cli.options import parse_size

app = typer.Typer(
    name="weights",
    help="List the model zoo, download weights from the Hugging Face Hub, publish a checkpoint.",
    no_args_is_help=True,
    add_completion=False,
)

_TOKEN_HELP = "Hugging Face token (default: HF_TOKEN or the saved `hf auth login`)."


@app.command("list")
def list_weights() -> None:
    """Show the trained checkpoints (published or shipped with segrefine) and the ImageNet backbone sources."""
    from segrefine.hub import load_registry

    registry = load_registry()
    console = Console()
    if registry.models:
        table = Table(title="Trained checkpoints")
        for column in ("name", "variant", "dataset", "classes", "Hub repo", "revision", "metrics", "default for"):
            table.add_column(column, no_wrap=column in ("name", "Hub repo"), overflow="fold")
        for m in registry.models:
            metrics = ", ".join(f"{k} {v}" for k, v in m.metrics.items() if k != "held_out")
            if m.metrics.get("held_out") is False:
                metrics += " (not held out: it trained on that split)"
            repo = m.repo or ("ships with segrefine" if m.embedded else "–")
            revision = m.revision or "–"
            table.add_row(m.name, m.variant, m.dataset, str(m.num_classes), repo, revision, metrics, ", ".join(m.default_for))
        console.print(table)
    else:
        console.print(
            "No trained segrefine checkpoint is published yet: train one with `segrefine train` and use it with "
            "--weights RUN_FOLDER (or share it with `segrefine weights push`)."
        )
    table = Table(
        "arch", "variants", Column("Hub repo", no_wrap=True), "revision", Column("sha256", overflow="fold"),
        title="ImageNet backbones", caption="sha256 –: not recorded, so the download is not hash-checked",
    )
    for b in registry.backbones:
        table.add_row(b.arch, ", ".join(b.variants), b.repo, b.revision, b.sha256 or "–")
    console.print(table)


@app.command("pull")
def pull(
    ref: str = typer.Argument(..., help="Hub repo owner/name\\[@revision], registry name, or ImageNet backbone repo."),
    token: str | None = typer.Option(None, "--token", help=_TOKEN_HELP),
) -> None:
    """Download weights into the Hugging Face cache and print their local path."""
    from segrefine.hub import pull as pull_weights

    typer.echo(pull_weights(ref, token=token))


@app.command("push")
def push(
    source: Path = typer.Argument(..., help="Training run folder, checkpoint folder, or .safetensors file."),
    repo_id: str = typer.Argument(..., help="Hub repo id owner/name (created if missing)."),
    revision: str | None = typer.Option(None, "--revision", help="Branch to commit to (created if missing; default main)."),
    private: bool = typer.Option(False, "--private", help="Create the repo as private."),
    token: str | None = typer.Option(None, "--token", help=_TOKEN_HELP),
    flops_size: str = typer.Option("1024x2048", "--flops-size", help="Input HxW at which the model card reports GMACs."),
) -> None:
    """Upload config.json, model.safetensors and a generated model card (README.md) in one commit."""
    from segrefine.hub import upload_checkpoint

    size = parse_size(flops_size, "--flops-size")
    url = upload_checkpoint(source, repo_id, revision=revision, private=private, token=token, flops_size=size)
    typer.echo(url)
