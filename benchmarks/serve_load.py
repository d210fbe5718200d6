"""Load on `segrefine serve` over loopback, side by side with the bare `Predictor` on the same image.

    python benchmarks/serve_load.py --image ../shared/data/images/street-cityscapes-512x1024.png
    python benchmarks/serve_load.py --image photo.jpg --weights runs/train/exp --clients 4 6 --requests 60

It starts the service as the README does (`segrefine serve`, its defaults), then measures, in order:
1. the bare rate: `segrefine.load(weights).predict` on the decoded image in this process, images/s;
2. for each client count: N requests of the image as a JPEG (format=label) spread over that many concurrent clients:
   throughput, p50/p99 latency, statuses, and that every answer is a full-size label PNG;
3. eight bad uploads (empty, truncated, not an image, wrong content type, a header claiming 60000×60000, over the
   body limit, an unknown format, an unknown path): their statuses, none may be 5xx;
4. a burst of `--burst` simultaneous requests, more than the queue holds: how many got 200 and 503, and the server's
   resident memory before and after;
5. /health afterwards.
Results go to benchmarks/results/serve-load.json. Run it on a quiet machine: the numbers are rates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np

import segrefine

RESULTS = Path(__file__).resolve().parent / "results" / "serve-load.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(weights: str | None, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "segrefine", "serve", "--port", str(port)]
    command += ["--weights", weights] if weights else []
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(1200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    sys.exit("the service did not start within two minutes")


def bare_rate(weights: str | None, image: np.ndarray, repeats: int) -> float:
    predictor = segrefine.load(weights, device="cpu")
    predictor.predict(image)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        predictor.predict(image)
    return repeats / (time.perf_counter() - start)


def load(url: str, jpeg: bytes, size: tuple[int, int], clients: int, requests: int) -> dict:
    def one(_: int) -> tuple[int, float, bool]:
        start = time.perf_counter()
        response = httpx.post(f"{url}/v1/predict?format=label", content=jpeg, headers={"content-type": "image/jpeg"},
                              timeout=600)  # fmt: skip
        seconds = time.perf_counter() - start
        full = False
        if response.status_code == 200:
            label = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_UNCHANGED)
            full = label is not None and label.shape == size
        return response.status_code, seconds, full

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    latencies = sorted(r[1] for r in results)
    statuses: dict[str, int] = {}
    for status, _, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "clients": clients, "requests": requests, "images_per_s": requests / wall, "statuses": statuses,
        "full_size_label_pngs": sum(r[2] for r in results),
        "p50_s": statistics.median(latencies), "p99_s": latencies[min(len(latencies) - 1, round(0.99 * len(latencies)))],
    }  # fmt: skip


def bad_uploads(url: str, png: bytes) -> dict[str, int]:
    claiming = bytearray(png)
    ihdr = claiming.index(b"IHDR")
    claiming[ihdr + 4 : ihdr + 12] = struct.pack(">II", 60000, 60000)
    claiming[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(claiming[ihdr : ihdr + 17])))
    cases = {
        "empty": ("/v1/predict", b"", "image/png"),
        "truncated": ("/v1/predict", png[: len(png) // 3], "image/png"),
        "not an image": ("/v1/predict", b"<html>hello</html>" * 50, "image/jpeg"),
        "wrong content type": ("/v1/predict", png, "text/plain"),
        "header claims 60000x60000": ("/v1/predict", bytes(claiming), "image/png"),
        "over the body limit": ("/v1/predict", b"\xff\xd8" + bytes(25 * 2**20), "image/jpeg"),
        "unknown format": ("/v1/predict?format=gif", png, "image/png"),
        "unknown path": ("/v1/segment", png, "image/png"),
    }
    return {
        name: httpx.post(f"{url}{path}", content=body, headers={"content-type": kind}, timeout=120).status_code
        for name, (path, body, kind) in cases.items()
    }


def burst(url: str, jpeg: bytes, count: int, pid: int) -> dict:
    before = rss_mb(pid)
    with ThreadPoolExecutor(count) as pool:
        statuses = list(pool.map(lambda _: httpx.post(
            f"{url}/v1/predict?format=label", content=jpeg, headers={"content-type": "image/jpeg"}, timeout=600,
        ).status_code, range(count)))  # fmt: skip
    return {
        "requests": count, "ok": statuses.count(200), "busy_503": statuses.count(503),
        "other": len(statuses) - statuses.count(200) - statuses.count(503),
        "server_rss_mb_before": round(before, 1), "server_rss_mb_after": round(rss_mb(pid), 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, required=True, help="the photo every request sends (as JPEG)")
    parser.add_argument("--weights", help="weights reference (default: the shipped model)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 6])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--burst", type=int, default=48, help="simultaneous requests, more than the default queue of 16")
    parser.add_argument("--bare-repeats", type=int, default=20)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    rgb = cv2.cvtColor(cv2.imread(str(args.image), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    jpeg = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    png = cv2.imencode(".png", rgb[..., ::-1])[1].tobytes()
    size = rgb.shape[:2]
    bare = bare_rate(args.weights, cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), 1), cv2.COLOR_BGR2RGB),
                     args.bare_repeats)  # fmt: skip
    print(f"bare Predictor: {bare:.2f} images/s")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(args.weights, port)
    try:
        runs = []
        for clients in args.clients:
            run = load(url, jpeg, size, clients, args.requests)
            run["vs_bare"] = run["images_per_s"] / bare
            runs.append(run)
            print(f"{clients} clients: {run['images_per_s']:.2f} images/s ({100 * run['vs_bare']:.0f}% of bare), "
                  f"p50 {run['p50_s']:.2f} s, p99 {run['p99_s']:.2f} s, statuses {run['statuses']}, "
                  f"{run['full_size_label_pngs']} full-size label PNGs")  # fmt: skip
        bad = bad_uploads(url, png)
        print(f"bad uploads: {bad}")
        flood = burst(url, jpeg, args.burst, server.pid)
        print(f"burst: {flood}")
        health = httpx.get(f"{url}/health", timeout=10).status_code
        print(f"/health afterwards: {health}")
        server.send_signal(signal.SIGTERM)
        exit_code = server.wait(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
    results = {
        "image": args.image.name, "size": list(size), "weights": args.weights or "shipped default",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "bare_images_per_s": bare, "runs": runs, "bad_uploads": bad, "burst": flood, "health_after": health,
        "sigterm_exit_code": exit_code,
    }  # fmt: skip
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
