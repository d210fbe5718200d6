"""`segrefine serve`: endpoints in-process, bad uploads, batching, the queue limit, SIGTERM, and the page in a browser."""

import asyncio
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import torch
from starlette.testclient import TestClient
from torch import nn

from segrefine.engine.predictor import Predictor
from segrefine.serve import ServeConfig, create_app

CLASSES = ["road", "sky", "car"]
PALETTE = [[128, 64, 128], [70, 130, 180], [0, 0, 142]]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "camvid-street.png"


class _Pointwise(nn.Module):
    """Class = which colour channel is largest; `gate` (an Event) holds every forward pass until it is set."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.gate = gate

    def forward(self, x):
        if self.gate is not None:
            self.gate.wait(10)
        return x * 10


def _predictor(gate=None) -> Predictor:
    config = {"model": {"num_classes": 3}, "classes": CLASSES, "palette": PALETTE, "dataset": "test"}
    return Predictor(_Pointwise(gate), config, torch.device("cpu"), source="model test: 3 classes")


def _image(height=24, width=32) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2, 0] = 200  # left half red -> class 0
    image[:, width // 2 :, 2] = 200  # right half blue -> class 2
    return image


def _encode(image: np.ndarray, ext=".png") -> bytes:
    return cv2.imencode(ext, image[..., ::-1])[1].tobytes()


def _decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


@pytest.fixture
def client():
    with TestClient(create_app(ServeConfig(max_body_mb=1, max_pixels=10_000), predictor=_predictor())) as client:
        yield client


def test_health_and_model(client):
    health = client.get("/health").json()
    assert health == {"model": "test", "classes": CLASSES, "device": "cpu", "ready": True}
    model = client.get("/v1/model").json()
    assert model["palette"] == PALETTE and model["max_pixels"] == 10_000 and model["max_body_bytes"] == 2**20
    assert set(model["formats"]) == {"label", "color", "overlay", "json"}


@pytest.mark.parametrize("ext,kind", [(".png", "image/png"), (".jpg", "image/jpeg"), (".webp", "image/webp")])
def test_label_png_at_full_size_for_each_accepted_format(client, ext, kind):
    response = client.post("/v1/predict?format=label", content=_encode(_image(), ext), headers={"content-type": kind})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    label = _decode(response.content)
    assert label.shape == (24, 32) and (label[:, :16] == 0).all() and (label[:, 16:] == 2).all()
    assert float(response.headers["X-Seconds"]) > 0


def test_color_overlay_json_and_multipart(client):
    body = _encode(_image())
    color = _decode(client.post("/v1/predict?format=color", content=body, headers={"content-type": "image/png"}).content)
    assert color.shape == (24, 32, 3) and color[0, 0, ::-1].tolist() == PALETTE[0] and color[0, -1, ::-1].tolist() == PALETTE[2]
    overlay = _decode(client.post("/v1/predict?format=overlay", content=body, headers={"content-type": "image/png"}).content)
    assert overlay.shape == (24, 32, 3) and overlay[0, 0, ::-1].tolist() == [164, 32, 64]  # half photo, half palette
    shares = client.post("/v1/predict?format=json", files={"image": ("x.png", body, "image/png")}).json()
    assert shares["classes"] == {"road": 0.5, "sky": 0.0, "car": 0.5}
    assert (shares["width"], shares["height"], shares["model"]) == (32, 24, "test") and shares["seconds"] > 0


def _png_claiming(width: int, height: int) -> bytes:
    """A valid small PNG whose IHDR is rewritten to claim another size (CRC fixed)."""
    data = bytearray(_encode(np.zeros((1, 1, 3), np.uint8)))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


BAD_UPLOADS = {
    "empty": (b"", "image/png", 400),
    "truncated": (_encode(_image())[:60], "image/png", 400),
    "not an image": (b"hello, world" * 10, "image/png", 415),
    "wrong content type": (_encode(_image()), "text/plain", 415),
    "bmp": (_encode(_image(), ".bmp"), "image/png", 415),
    "header claims 60000x60000": (_png_claiming(60000, 60000), "image/png", 413),
    "over max pixels": (_encode(_image(200, 200)), "image/png", 413),
    "over max body": (b"\x89PNG" + bytes(2**20), "image/png", 413),
}


@pytest.mark.parametrize("name", BAD_UPLOADS)
def test_bad_uploads_get_a_4xx_with_one_line_and_the_service_goes_on(client, name):
    body, kind, status = BAD_UPLOADS[name]
    response = client.post("/v1/predict", content=body, headers={"content-type": kind})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error and "\n" not in error
    assert client.post("/v1/predict", content=_encode(_image()), headers={"content-type": "image/png"}).status_code == 200
    assert client.get("/health").status_code == 200


def test_an_image_the_model_cannot_take_is_422_in_one_line():
    from segrefine.imageio import UnreadableInput

    predictor = _predictor()

    def fixed_size(images, batch_size=None):
        raise UnreadableInput("m.onnx was exported for 64×64 images (H×W) and cannot take 24×32")

    predictor.predict_batch = fixed_size
    with TestClient(create_app(ServeConfig(), predictor=predictor)) as client:
        response = client.post("/v1/predict", content=_encode(_image()), headers={"content-type": "image/png"})
    assert response.status_code == 422 and response.json()["error"].startswith("m.onnx was exported for 64×64")


def test_a_header_past_what_pillow_decodes_is_413_even_under_a_larger_max_pixels():
    from segrefine.imageio import PILLOW_MAX_PIXELS
    from segrefine.serve.uploads import BadUpload, decode_upload

    with pytest.raises(BadUpload, match=f"more than {PILLOW_MAX_PIXELS} pixels, more than can be decoded") as caught:
        decode_upload(_png_claiming(60000, 60000), max_pixels=4 * PILLOW_MAX_PIXELS)
    assert caught.value.status == 413


@pytest.mark.parametrize("shape", [(16, 24), (16, 24, 3)], ids=["gray", "rgb"])
def test_16_bit_pngs_decode_as_predict_reads_them(tmp_path, shape):
    from segrefine.imageio import read_image
    from segrefine.serve.uploads import decode_upload

    pixels = np.random.default_rng(0).integers(0, 2**16, shape, dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "x.png"), pixels)
    decoded = decode_upload((tmp_path / "x.png").read_bytes(), 10_000)
    assert decoded.shape == (16, 24, 3) and decoded.dtype == np.uint8
    assert np.array_equal(decoded, read_image(tmp_path / "x.png"))


def test_unknown_format_path_method_and_form_field(client):
    body = _encode(_image())
    response = client.post("/v1/predict?format=jpeg", content=body, headers={"content-type": "image/png"})
    assert response.status_code == 400 and "format must be one of" in response.json()["error"]
    assert client.get("/v2/nothing").status_code == 404 and "error" in client.get("/v2/nothing").json()
    assert client.get("/v1/predict").status_code == 405 and "error" in client.get("/v1/predict").json()
    response = client.post("/v1/predict", files={"photo": ("x.png", body, "image/png")})
    assert response.status_code == 400 and "'image'" in response.json()["error"]


def _async_client(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def test_same_size_requests_share_a_forward_pass():
    app = create_app(ServeConfig(max_batch=4, batch_wait_ms=100), predictor=_predictor())

    async def run():
        async with app.router.lifespan_context(app), _async_client(app) as client:
            post = lambda: client.post("/v1/predict", content=_encode(_image()), headers={"content-type": "image/png"})
            return await asyncio.gather(post(), post())

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200, 200]
    assert app.state.batcher.batch_sizes == [2]


def test_a_full_queue_answers_503_with_retry_after_and_recovers():
    gate = threading.Event()
    app = create_app(ServeConfig(max_batch=1, max_queue=1, batch_wait_ms=0), predictor=_predictor(gate))

    async def run():
        async with app.router.lifespan_context(app), _async_client(app) as client:
            post = lambda: client.post("/v1/predict", content=_encode(_image()), headers={"content-type": "image/png"})
            first = asyncio.create_task(post())  # taken into the (held) forward pass
            while not app.state.batcher.batch_sizes:
                await asyncio.sleep(0.01)
            second = asyncio.create_task(post())  # waits in the queue
            while not app.state.batcher.waiting:
                await asyncio.sleep(0.01)
            third = await post()  # finds the queue full
            gate.set()
            return await first, await second, third

    first, second, third = asyncio.run(run())
    assert third.status_code == 503 and third.headers["Retry-After"] == "1" and "busy" in third.json()["error"]
    assert first.status_code == second.status_code == 200


def test_an_image_whose_client_went_away_leaves_the_queue_unpredicted():
    gate = threading.Event()
    app = create_app(ServeConfig(max_batch=1, max_queue=1, batch_wait_ms=0), predictor=_predictor(gate))
    body = _encode(_image())

    async def abandoned(gone: asyncio.Event) -> list[dict]:
        """A raw ASGI request that sends its image, then disconnects once `gone` is set."""
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent = []

        async def receive():
            if messages:
                return messages.pop()
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/predict", "query_string": b"format=json",
                 "headers": [(b"content-type", b"image/png")], "http_version": "1.1", "scheme": "http",
                 "server": ("test", 80), "client": ("test", 1), "root_path": ""}  # fmt: skip
        await app(scope, receive, send)
        return sent

    async def run():
        async with app.router.lifespan_context(app), _async_client(app) as client:
            post = lambda: client.post("/v1/predict", content=body, headers={"content-type": "image/png"})
            first = asyncio.create_task(post())  # taken into the (held) forward pass
            while not app.state.batcher.batch_sizes:
                await asyncio.sleep(0.01)
            gone = asyncio.Event()
            left = asyncio.create_task(abandoned(gone))  # fills the queue, then its client goes
            while not app.state.batcher.waiting:
                await asyncio.sleep(0.01)
            gone.set()
            await left
            third = asyncio.create_task(post())  # the queue has room again
            await asyncio.sleep(0.05)
            gate.set()
            return await first, await third, await left

    first, third, left = asyncio.run(run())
    assert first.status_code == third.status_code == 200 and left[0]["status"] == 499
    assert app.state.batcher.batch_sizes == [1, 1]  # the abandoned image never ran


def test_cli_checks_its_settings_in_one_line(cli):
    result = cli("serve", "--max-queue", "0")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "segrefine: error: --max-queue must be at least 1, got 0"
    ]
    help_text = cli("serve", "--help").stdout
    assert all(flag in help_text for flag in ("--max-batch", "--max-queue", "--max-pixels", "--max-body"))
    assert "'segrefine[serve]'" in help_text  # not eaten as rich markup
    assert cli("serve", "--max-body", "inf").stderr.splitlines() == ["segrefine: error: --max-body must be a finite number, got inf"]
    with socket.socket() as taken:  # refused before the model loads
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("serve", "--port", str(port))
    assert result.returncode == 2 and result.stderr.splitlines() == [  # refused before "loading the shipped model"
        f"segrefine: error: cannot listen on --host 127.0.0.1 --port {port}: Address already in use"
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`segrefine serve` with the shipped model, as the README starts it, in a real process."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "segrefine", "serve", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail(f"the service did not start: {process.communicate()[0]}")
    yield url, process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_real_server_predicts_then_finishes_in_flight_work_on_sigterm(server):
    url, process = server
    photo = EXAMPLE.read_bytes()
    response = httpx.post(f"{url}/v1/predict?format=label", content=photo, headers={"content-type": "image/png"}, timeout=60)
    assert response.status_code == 200 and _decode(response.content).shape == (360, 480)
    result = {}
    worker = threading.Thread(target=lambda: result.update(r=httpx.post(
        f"{url}/v1/predict?format=json", content=photo, headers={"content-type": "image/png"}, timeout=60)))
    worker.start()
    time.sleep(0.3)  # the request is in flight
    process.send_signal(signal.SIGTERM)
    worker.join()
    assert process.wait(timeout=60) == 0
    assert result["r"].status_code == 200 and result["r"].json()["width"] == 480


def _chromium():
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    return browser, driver


def test_the_page_in_a_headless_browser_shows_the_overlay_and_legend(tmp_path):
    browser, driver_path = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = _free_port()
    import uvicorn

    app = create_app(ServeConfig(port=port), predictor=_predictor())
    service = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    while not service.started:
        time.sleep(0.05)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(driver, 20).until(lambda d: "3 classes" in d.find_element(By.ID, "model").text)
        photo = tmp_path / "photo.png"
        cv2.imwrite(str(photo), _image(40, 60)[..., ::-1])
        driver.find_element(By.ID, "file").send_keys(str(photo))
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done")
        legend = [item.text.split("\n") for item in driver.find_elements(By.CSS_SELECTOR, "#legend li")]
        assert [row[0] for row in legend] == ["road", "car"] and all(row[1] == "50.0%" for row in legend)
        size = driver.execute_script("const c = document.getElementById('overlay'); return [c.width, c.height];")
        pixel = driver.execute_script(
            "return Array.from(document.getElementById('overlay').getContext('2d').getImageData(5, 5, 1, 1).data);")
        assert size == [60, 40] and pixel[:3] == [164, 32, 64]  # the photo blended with road's colour
        driver.save_screenshot(str(tmp_path / "page.png"))
    finally:
        driver.quit()
        service.should_exit = True
        thread.join(10)
