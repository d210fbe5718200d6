"""The settings of `segrefine serve`: one dataclass for the app, the Python call and the command's flags."""

from __future__ import annotations

from dataclasses import dataclass

from segrefine.engine.inference import check_runtime
from segrefine.errors import SettingError, check_fields


@dataclass(frozen=True)
class ServeConfig:
    weights: str | None = None  # any weights reference; None: the shipped model
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"
    precision: str = "fp32"
    backend: str | None = None  # None: onnxruntime for an .onnx file, else torch
    max_batch: int = 0  # 0: the Predictor's default for the device (1 on a CPU, 4 on CUDA)
    max_queue: int = 16  # images waiting for a forward pass; more are answered 503
    max_pixels: int = 40_000_000  # width × height from the image's header, checked before decoding
    max_body_mb: float = 20.0
    batch_wait_ms: float = 5.0  # how long a forward pass waits for more same-size images

    def __post_init__(self) -> None:
        check_fields(self)
        if not 0 <= self.port <= 65535:
            raise SettingError(f"`port` must be 0-65535, got {self.port}")
        check_runtime(self.backend, self.precision)
        for name in ("max_queue", "max_pixels"):
            if getattr(self, name) < 1:
                raise SettingError(f"`{name}` must be at least 1, got {getattr(self, name)}")
        if self.max_batch < 0:
            raise SettingError(f"`max_batch` must be at least 1 (or 0 for the device's default), got {self.max_batch}")
        if not self.max_body_mb > 0:
            raise SettingError(f"`max_body_mb` must be positive, got {self.max_body_mb}")
        if not 0 <= self.batch_wait_ms <= 1000:
            raise SettingError(f"`batch_wait_ms` must be 0-1000, got {self.batch_wait_ms}")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)
