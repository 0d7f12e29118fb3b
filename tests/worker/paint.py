"""A real, cheap generator for worker tests: it paints each image one flat colour
derived from its seed, taking `steps` steps of `step_s` seconds each.

Prompts steer failures: "user-error" raises a UserError, "crash" a plain bug.
It is also run as a worker process by the crash-recovery tests:

    python -m tests.worker.paint DATA_DIR STEP_S              # burst worker on DATA_DIR
    python -m tests.worker.paint DATA_DIR STEP_S --connect URL [--name NAME] [--models A,B]
                                 # a remote worker through Redis (worker.remote), as
                                 # `artbot worker --connect` runs, until SIGTERM
"""

from __future__ import annotations

import asyncio
import sys
import time

from PIL import Image

from artbot.errors import UserError
from generators.base import GenerationRequest, GenerationResult, Generator


class PaintGenerator(Generator):
    family = "paint"

    def __init__(self, step_s: float = 0.0):
        super().__init__(model_revision="paint-1")
        self.step_s = step_s
        self.calls = 0

    def _paint(self, request: GenerationRequest, progress) -> GenerationResult:
        self.calls += 1
        if request.prompt == "user-error":
            raise UserError("That prompt is not allowed here.")
        if request.prompt == "crash":
            raise ZeroDivisionError("bug in the generator")
        for step in range(1, request.steps + 1):
            if self.step_s:
                time.sleep(self.step_s)
            progress(step, request.steps)
        images = [
            Image.new("RGB", (request.width, request.height),
                      (seed % 256, (seed // 256) % 256, 77))
            for seed in request.seeds
        ]
        return GenerationResult(images=images, seeds=list(request.seeds))

    draw = _paint
    vary = _paint


def paint_loader(step_s: float = 0.0):
    generators: dict = {}

    def load(family, model, device, dtype):
        generators.setdefault(model, PaintGenerator(step_s))
        return generators[model]

    load.generators = generators
    return load


if __name__ == "__main__":
    from artbot.config import Settings
    from storage.images import ImageStore
    from worker.queue import LocalJobQueue
    from worker.runner import Worker

    data_dir, step_s = sys.argv[1], float(sys.argv[2])
    if "--connect" in sys.argv:
        import logging
        import signal

        from worker.remote import serve_remote

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        url = sys.argv[sys.argv.index("--connect") + 1]
        name = sys.argv[sys.argv.index("--name") + 1] if "--name" in sys.argv else None
        models = (sys.argv[sys.argv.index("--models") + 1].split(",") if "--models" in sys.argv
                  else ["paint-model"])

        async def remote():
            import os

            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            # The lease and heartbeat the worker runs under come from the environment,
            # as they would for `artbot worker --connect`.
            settings = Settings(data_dir=data_dir, device="cpu",
                                lease_s=float(os.environ.get("ARTBOT_LEASE_S", "120")),
                                max_batch_images=int(os.environ.get("ARTBOT_MAX_BATCH_IMAGES", "8")),
                                redis_password=os.environ.get("ARTBOT_REDIS_PASSWORD"))
            n = await serve_remote(settings, url, name=name, serves=models,
                                   loader=paint_loader(step_s), warm_up=False, stop=stop)
            print(f"ran {n}", flush=True)

        asyncio.run(remote())
        sys.exit(0)

    async def main():
        settings = Settings(data_dir=data_dir, device="cpu")
        queue = await LocalJobQueue(settings.db_path).open()
        worker = Worker(queue, ImageStore(settings.image_dir), settings,
                        loader=paint_loader(step_s), heartbeat_s=0.1)
        n = await worker.run(burst=True)
        await queue.close()
        print(f"ran {n}")

    asyncio.run(main())
