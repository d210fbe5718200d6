"""`segrefine serve`: the model as a web service, with a page to try it in a browser."""

from __future__ import annotations

import sys
from dataclasses import fields
from typing import Annotated, Literal, Optional

import typer

from segrefine.cli.options import Device, Weights
from segrefine.engine.inference import BACKENDS, PRECISIONS, InferenceOptions
from segrefine.errors import SegrefineError

# \\[ : rich's markup in help texts would take [serve] for a style and drop it.
EPILOG = (
    "Endpoints: GET / (a page to try the model), GET /health, GET /v1/model, POST /v1/predict?format=label|color|"
    "overlay|json with the image as the body or as the multipart field 'image'. Needs pip install 'segrefine\\[serve]'."
)
# --precision and --backend are predict's, with its help.
_HELP = {f.name: f.metadata["help"] for f in fields(InferenceOptions)}


def serve(
    weights: Weights = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    device: Device = "auto",
    precision: Annotated[Literal[PRECISIONS], typer.Option("--precision", help=_HELP["precision"])] = "fp32",
    backend: Annotated[
        Optional[Literal[BACKENDS]], typer.Option("--backend", help=_HELP["backend"], show_default=False)
    ] = None,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Same-size images per forward pass (0: 1 on a CPU, 4 on CUDA).")] = 0,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Images waiting for the model; beyond, requests get 503.")] = 16,
    max_pixels: Annotated[int, typer.Option("--max-pixels", help="Largest image (width × height, read from its header).")] = 40_000_000,
    max_body: Annotated[float, typer.Option("--max-body", help="Largest request body, in MB.")] = 20.0,
) -> None:
    """Serve the model over HTTP (Starlette on uvicorn); Ctrl-C or SIGTERM finishes the requests in flight."""
    try:
        from segrefine.serve import ServeConfig, serve as run_service
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise SegrefineError(f"segrefine serve needs {e.name}: pip install 'segrefine[serve]'") from None
    config = ServeConfig(
        weights=weights, host=host, port=port, device=device, precision=precision, backend=backend,
        max_batch=max_batch, max_queue=max_queue, max_pixels=max_pixels, max_body_mb=max_body,
    )  # fmt: skip
    run_service(config, on_message=lambda message: print(f"segrefine serve: {message}", file=sys.stderr))
