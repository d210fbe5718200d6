"""The web service: a Starlette app around one `Predictor`, its requests batched and bounded.

    GET  /             a page to try the model in a browser (works offline)
    GET  /health       model, classes, device, ready
    GET  /v1/model     classes, palette and the input limits
    POST /v1/predict?format=label|color|overlay|json   the image as the body (JPEG, PNG, WebP) or multipart field `image`

Every error is a 4xx (or 503 when the queue is full) with a one-line JSON body {"error": ...}; decoding, encoding and
inference run off the event loop, so the service keeps answering while a forward pass runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TypeVar

import cv2
import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from segrefine.engine.predictor import Predictor, load
from segrefine.errors import SettingError
from segrefine.imageio import UnreadableInput
from segrefine.serve.batcher import Batcher, QueueFull
from segrefine.serve.config import ServeConfig
from segrefine.serve.uploads import FORMATS, BadUpload, decode_upload

OUTPUTS = ("label", "color", "overlay", "json")
OVERLAY_ALPHA = 0.5
RETRY_AFTER_S = 1
CLIENT_GONE = 499  # nginx's status for a request its client closed: never seen by that client, only in logs
T = TypeVar("T")


class BodyTooLarge(Exception):
    """Raised from `receive` once a streamed body passes the limit; `BodyLimit` answers 413."""


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413, from its Content-Length when it has one,
    else as soon as the bytes received pass the limit (chunked uploads)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _too_large(self.limit)(scope, receive, send)
        received = 0

        async def limited() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise BodyTooLarge
            return message

        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracking_send)
        except BodyTooLarge:
            if not started:
                await _too_large(self.limit)(scope, receive, send)


def _too_large(limit: int) -> Response:
    return _error(f"the body is larger than the limit of {limit / 2**20:g} MB", 413)


def _error(message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _unless_gone(request: Request, work: Awaitable[T]) -> T | None:
    """`work`'s result; None, with `work` cancelled (so its image leaves the queue), once the client disconnects."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        message = await request.receive()  # the body was read: only the disconnect is left to come
        while message["type"] != "http.disconnect":
            message = await request.receive()

    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if not task.done():
        task.cancel()
        return None
    return task.result()


def _png(image: np.ndarray) -> bytes:
    """PNG bytes of an H×W label map or an H×W×3 RGB image."""
    pixels = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()


def create_app(config: ServeConfig | None = None, *, predictor: Predictor | None = None) -> Starlette:
    """The service as an ASGI app, for `uvicorn` or any ASGI server; `predictor` replaces loading `config.weights`."""
    config = config or ServeConfig()
    if predictor is None:
        predictor = load(config.weights, config.device, backend=config.backend, precision=config.precision)
    name = config.weights or predictor.source.split(":", 1)[0].removeprefix("model ")
    max_batch = config.max_batch or predictor.batch_size or 1
    batcher = Batcher(
        lambda images: predictor.predict_batch(images, batch_size=max_batch),
        max_batch=max_batch, max_queue=config.max_queue, wait_s=config.batch_wait_ms / 1000,
    )  # fmt: skip

    async def page(request: Request) -> Response:
        return HTMLResponse(resources.files("segrefine.serve").joinpath("page.html").read_text(encoding="utf-8"))

    async def health(request: Request) -> Response:
        return JSONResponse(
            {"model": name, "classes": list(predictor.classes), "device": str(predictor.device), "ready": True}
        )

    async def model(request: Request) -> Response:
        return JSONResponse({
            "model": name, "source": predictor.source, "classes": list(predictor.classes),
            "palette": [list(c) for c in predictor.palette], "formats": list(OUTPUTS),
            "accepts": list(FORMATS.values()), "max_pixels": config.max_pixels, "max_body_bytes": config.max_body_bytes,
            "max_batch": max_batch,
        })  # fmt: skip

    async def upload(request: Request) -> bytes:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            async with request.form(max_files=1, max_fields=8) as form:
                field = form.get("image")
                if field is None or isinstance(field, str):
                    raise BadUpload("the multipart form has no file field named 'image'")
                return await field.read()
        if kind in FORMATS.values() or kind == "application/octet-stream":
            return await request.body()
        raise BadUpload(
            f"content type {kind or '(none)'!r} is not accepted: send the image as the body "
            f"({', '.join(FORMATS.values())}) or as the multipart field 'image'", 415,
        )  # fmt: skip

    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        output = request.query_params.get("format", "label")
        if output not in OUTPUTS:
            return _error(f"format must be one of {', '.join(OUTPUTS)}, got {output!r}", 400)
        try:
            image = await run_in_threadpool(decode_upload, await upload(request), config.max_pixels)
            label = await _unless_gone(request, batcher.predict(image))
        except BadUpload as e:
            return _error(str(e), e.status)
        except UnreadableInput as e:  # an image the model cannot take, e.g. a size a fixed-size .onnx was not made for
            return _error(str(e), 422)
        except QueueFull:
            return _error("the service is busy: too many images are waiting; retry shortly", 503,
                          {"Retry-After": str(RETRY_AFTER_S)})  # fmt: skip
        if label is None:
            return _error("the client went away before its image was segmented", CLIENT_GONE)
        seconds = time.perf_counter() - started
        headers = {"X-Seconds": f"{seconds:.4f}"}
        if output == "json":
            shares = np.bincount(label.ravel(), minlength=predictor.num_classes)[: predictor.num_classes] / label.size
            return JSONResponse({
                "model": name, "width": int(label.shape[1]), "height": int(label.shape[0]), "seconds": round(seconds, 4),
                "classes": {c: round(float(s), 6) for c, s in zip(predictor.classes, shares)},
            }, headers=headers)  # fmt: skip
        if output == "label":
            body = await run_in_threadpool(_png, label)
        elif output == "color":
            body = await run_in_threadpool(lambda: _png(predictor.colorize(label)))
        else:
            body = await run_in_threadpool(lambda: _png(predictor.overlay(image, label, OVERLAY_ALPHA)))
        return Response(body, media_type="image/png", headers=headers)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(f"{request.method} {request.url.path}: {exc.detail}", exc.status_code)

    async def server_error(request: Request, exc: Exception) -> Response:
        return _error(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", 500)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await batcher.start()
        yield
        await batcher.stop()  # uvicorn stops accepting first; the images already queued are answered

    app = Starlette(
        routes=[
            Route("/", page), Route("/health", health), Route("/v1/model", model),
            Route("/v1/predict", predict, methods=["POST"]),
        ],
        middleware=[Middleware(BodyLimit, limit=config.max_body_bytes)],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )  # fmt: skip
    app.state.batcher, app.state.predictor, app.state.config = batcher, predictor, config
    return app


def serve(config: ServeConfig | None = None, on_message: Callable[[str], None] | None = None) -> None:
    """Run the service with uvicorn until SIGINT or SIGTERM (requests in flight are finished first); `on_message`
    hears when the model starts loading."""
    import uvicorn

    config = config or ServeConfig()
    listening = _bind(config.host, config.port)  # before the model loads: a port in use fails at once, in one line
    if on_message is not None:
        on_message(f"loading {config.weights or 'the shipped model'}")
    server = uvicorn.Server(uvicorn.Config(
        create_app(config), host=config.host, port=config.port, log_level="info", timeout_graceful_shutdown=30,
    ))  # fmt: skip
    if threading.current_thread() is not threading.main_thread():
        return server.run(sockets=[listening])
    # uvicorn answers SIGTERM by finishing the requests in flight, then raises SIGTERM again under the handler it
    # found: with this one in place, a finished graceful shutdown exits normally (status 0) instead of by the signal.
    previous = signal.signal(signal.SIGTERM, lambda number, frame: None)
    try:
        server.run(sockets=[listening])
    finally:
        signal.signal(signal.SIGTERM, previous)


def _bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (`host`, `port`), for uvicorn to listen on."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listening = socket.socket(family, socket.SOCK_STREAM)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restarts are not refused
        listening.bind((host, port))
    except OSError as e:
        raise SettingError(f"cannot listen on `host` {host} `port` {port}: {e.strerror or e}") from None
    return listening
