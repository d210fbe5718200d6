"""`segrefine datasets`: the dataset adapters, their classes and the layout each expects."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from segrefine.data import DATASETS, dataset_layouts
from segrefine.engine.recipes import dataset_recipes


def datasets() -> None:
    """List the dataset adapters, the files each expects under --data-root, and their training recipe."""
    table = Table(show_lines=True, expand=True)
    # Layouts are mostly long paths without spaces: fold them onto the next line rather than cut them with "…".
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("layout under --data-root", overflow="fold", ratio=3)
    table.add_column("recipe", overflow="fold", ratio=2)
    for name, layout in dataset_layouts().items():
        recipe = "\n".join(
            f"{key}: crop {r.crop[0]}×{r.crop[1]} (H×W), batch {r.batch_size}, {r.iters} iters, {r.loss}, lr {r.lr}, "
            f"backbone {r.pretrained_backbone}"
            + (f", {r.class_weight} class weights" if r.class_weight != "none" else "")
            + (", bf16 autocast" if r.amp else "")
            + (f", {r.train_split}→{r.val_split}" if (r.train_split, r.val_split) != ("train", "val") else "")
            for key, r in dataset_recipes(name).items()
        )
        splits = ", ".join(DATASETS[name].splits)
        table.add_row(name, escape(f"{layout}\nsplits: {splits}"), recipe)
    Console().print(table)
