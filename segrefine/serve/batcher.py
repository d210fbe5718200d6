"""Micro-batching: same-size images arriving within a few milliseconds share one forward pass, off the event loop."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class QueueFull(RuntimeError):
    """More images are waiting than the service accepts."""


class Batcher:
    """Queues images for `predict_batch` (a list of H×W×3 arrays -> a list of label maps), at most `max_queue`
    waiting; one worker thread runs forward passes of up to `max_batch` same-size images."""

    def __init__(
        self,
        predict_batch: Callable[[Sequence[np.ndarray]], list[np.ndarray]],
        *,
        max_batch: int,
        max_queue: int,
        wait_s: float = 0.005,
    ) -> None:
        self.predict_batch, self.max_batch, self.max_queue, self.wait_s = predict_batch, max_batch, max_queue, wait_s
        self.waiting: collections.deque[tuple[np.ndarray, asyncio.Future]] = collections.deque()
        self.batch_sizes: list[int] = []  # one entry per forward pass: how many images it took
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segrefine-forward")

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Finish every queued image, then stop."""
        while self.waiting:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def predict(self, image: np.ndarray) -> np.ndarray:
        """The label map of one image, once its batch has run; QueueFull if `max_queue` images are waiting."""
        if len(self.waiting) >= self.max_queue:  # images whose requests were given up no longer count
            self.waiting = collections.deque(item for item in self.waiting if not item[1].cancelled())
        if len(self.waiting) >= self.max_queue:
            raise QueueFull(f"{len(self.waiting)} images are waiting already")
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((image, future))
        assert self._wake is not None, "Batcher.start() was not awaited"
        self._wake.set()
        return await future

    def _take_batch(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        """The oldest waiting image and up to max_batch - 1 more of its size, in arrival order."""
        size = self.waiting[0][0].shape
        batch, rest = [], collections.deque()
        while self.waiting:
            item = self.waiting.popleft()
            (batch if item[0].shape == size and len(batch) < self.max_batch else rest).append(item)
        self.waiting.extendleft(reversed(rest))
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.waiting:
                if self.max_batch > 1 and len(self.waiting) < self.max_batch:
                    await asyncio.sleep(self.wait_s)  # let same-size requests in flight join this forward pass
                batch = [item for item in self._take_batch() if not item[1].cancelled()]
                if not batch:
                    continue
                self.batch_sizes.append(len(batch))
                try:
                    labels = await loop.run_in_executor(self._executor, self.predict_batch, [image for image, _ in batch])
                except Exception as e:  # noqa: BLE001 (handed to each waiting request)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                for (_, future), label in zip(batch, labels):
                    if not future.done():
                        future.set_result(label)
