"""The model card (README.md with Hugging Face YAML metadata) of a checkpoint, generated from its config.json."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

# Metric keys of `segrefine.engine.metrics.summary` → Hub metric ids (model-index `type`).
HUB_METRIC_IDS = {
    "mIoU": "mean_iou",
    "mAcc": "mean_accuracy",
    "aAcc": "overall_accuracy",
    "fwIoU": "frequency_weighted_iou",
    "boundary_mIoU": "boundary_iou",
}


def model_card(
    config: Mapping[str, Any],
    *,
    repo_id: str | None = None,
    name: str | None = None,
    params: int | None = None,
    gmacs: float | None = None,
    input_size: tuple[int, int] | None = None,
    license: str | None = None,
    details: str = "",
) -> str:
    """README.md text for a checkpoint; metrics in config["metrics"] are fractions in [0, 1], shown in percent.

    `name` (a registry name; default: `repo_id`) titles the card and is the reference its usage shows.
    `license` is a Hub licence id (e.g. "cc-by-nc-4.0"); `details` is Markdown placed after the results (data,
    training command, hardware, ...)."""
    from segrefine.models.registry import VARIANTS

    model = config["model"]
    dataset = str(config.get("dataset", "unknown"))
    classes = list(config.get("classes", []))
    palette = list(config.get("palette", []))
    metrics = dict(config.get("metrics") or {})
    split = str(metrics.pop("split", "val"))
    scores = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    per_class = metrics.get("per_class") if isinstance(metrics.get("per_class"), dict) else {}
    variant = str(model.get("variant", ""))
    backbone = VARIANTS[variant].backbone if variant in VARIANTS else "unknown"
    ref = name or repo_id or "owner/name"
    name = name or repo_id or f"segrefine-{variant}-{dataset}"

    data = ModelCardData(
        license=license,
        library_name="segrefine",
        pipeline_tag="image-segmentation",
        tags=["segrefine", "semantic-segmentation", "image-segmentation", "safetensors", backbone, f"segrefine-{variant}"],
        datasets=[dataset],
        metrics=sorted({HUB_METRIC_IDS.get(k, k.lower()) for k in scores}) or None,
        model_name=name if scores else None,
        eval_results=[
            EvalResult(
                task_type="image-segmentation",
                task_name="Semantic Segmentation",
                dataset_type=dataset,
                dataset_name=dataset,
                dataset_split=split,
                metric_type=HUB_METRIC_IDS.get(key, key.lower()),
                metric_name=key,
                metric_value=round(100 * value, 2),
            )
            for key, value in scores.items()
        ]
        or None,
    )

    lines = [
        f"# {name}",
        "",
        f"A segrefine `{variant}` semantic segmentation network ({backbone} backbone) "
        f"trained on **{dataset}** ({len(classes)} classes). Weights: `model.safetensors`; architecture: `config.json`.",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| {key} | `{value}` |" for key, value in model.items()),
        "",
    ]
    if scores:
        lines += [f"## Results ({dataset} {split}, %)", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {100 * value:.2f} |" for key, value in scores.items()]
        lines.append("")
    if details:
        lines += [details.strip(), ""]
    if params is not None or gmacs is not None:
        lines += ["## Complexity", "", "| measure | value |", "|---|---|"]
        if params is not None:
            lines.append(f"| parameters | {params / 1e6:.2f} M |")
        if gmacs is not None:
            at = f" at 1×3×{input_size[0]}×{input_size[1]}" if input_size else ""
            lines.append(f"| GMACs{at} | {gmacs:.1f} (GFLOPs = 2 × GMACs) |")
        lines.append("")
    lines += [
        "## Usage",
        "",
        "```bash",
        f"segrefine weights pull {ref}",
        "```",
        "",
        "```python",
        "from segrefine.hub import load_model",
        "",
        f'model, config = load_model("{ref}")  # eval mode; input: ImageNet-normalised B×3×H×W, output: B×K×H×W logits',
        "```",
        "",
        "## Classes",
        "",
        "| id | name | colour (RGB) |" + (" IoU (%) |" if per_class else ""),
        "|---|---|---|" + ("---|" if per_class else ""),
    ]
    for i, cls in enumerate(classes):
        colour = ", ".join(map(str, palette[i])) if i < len(palette) else ""
        row = f"| {i} | {cls} | {colour} |"
        if per_class:
            iou = (per_class.get(cls) or {}).get("iou")
            row += f" {100 * iou:.2f} |" if isinstance(iou, (int, float)) else " – |"
        lines.append(row)
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"
    return str(ModelCard(content))
