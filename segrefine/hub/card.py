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
    training command, hardware, ...). Metrics with `"held_out": false` (the model trained on the split they score)
    are shown as such and left out of the Hub's model-index, which would present them as an evaluation."""
    from segrefine.models.registry import VARIANTS

    model = config["model"]
    dataset = str(config.get("dataset", "unknown"))
    classes = list(config.get("classes", []))
    palette = list(config.get("palette", []))
    metrics = dict(config.get("metrics") or {})
    split = str(metrics.pop("split", "val"))
    held_out = metrics.pop("held_out", True) is not False
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
        if held_out and scores else None,
    )

    rows = [
        {"id": i, "name": cls, "colour": ", ".join(map(str, palette[i])) if i < len(palette) else "",
         "iou": _percent((per_class.get(cls) or {}).get("iou")) if per_class else None}
        for i, cls in enumerate(classes)
    ]  # fmt: skip
    card = ModelCard.from_template(
        data, template_str=TEMPLATE, name=name, ref=ref, variant=variant, backbone=backbone, dataset=dataset,
        num_classes=len(classes), settings=model, split=split, scores={k: 100 * v for k, v in scores.items()},
        details=details.strip(), params=params, gmacs=gmacs, input_size=input_size, rows=rows,
        per_class=bool(per_class), held_out=held_out,
    )  # fmt: skip
    return str(card)


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) else "–"


TEMPLATE = """---
{{ card_data }}
---

# {{ name }}

A segrefine `{{ variant }}` semantic segmentation network ({{ backbone }} backbone) trained on **{{ dataset }}** \
({{ num_classes }} classes). Weights: `model.safetensors`; architecture: `config.json`.

| setting | value |
|---|---|
{% for key, value in settings.items() %}| {{ key }} | `{{ value }}` |
{% endfor %}
{% if scores %}## Results ({{ dataset }} {{ split }}{% if not held_out %}, frames it trained on{% endif %}, %)

| metric | value |
|---|---|
{% for key, value in scores.items() %}| {{ key }} | {{ "%.2f" | format(value) }} |
{% endfor %}
{% endif %}{% if details %}{{ details }}

{% endif %}{% if params is not none or gmacs is not none %}## Complexity

| measure | value |
|---|---|
{% if params is not none %}| parameters | {{ "%.2f" | format(params / 1e6) }} M |
{% endif %}{% if gmacs is not none %}| GMACs{% if input_size %} at 1×3×{{ input_size[0] }}×{{ input_size[1] }}{% endif %} | {{ "%.1f" | format(gmacs) }} (GFLOPs = 2 × GMACs) |
{% endif %}
{% endif %}## Usage

```bash
segrefine weights pull {{ ref }}
segrefine predict street.png --weights {{ ref }}
```

```python
import segrefine

model = segrefine.SegRefineModel.from_pretrained("{{ ref }}")  # eval mode; ImageNet-normalised B×3×H×W -> B×K×H×W logits
predictor = segrefine.load("{{ ref }}")                        # or predict images, folders and videos directly
```

## Classes

| id | name | colour (RGB) |{% if per_class %} IoU (%) |{% endif %}
|---|---|---|{% if per_class %}---|{% endif %}
{% for row in rows %}| {{ row.id }} | {{ row.name }} | {{ row.colour }} |{% if per_class %} {{ row.iou }} |{% endif %}
{% endfor %}"""
