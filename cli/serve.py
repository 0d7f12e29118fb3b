"""The long-running commands: the Discord bot, a worker, and training."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path

from artbot.config import Settings
from artbot.errors import InvalidRequest


def cmd_run(settings: Settings, args) -> int:
    if not settings.discord_token:
        print("error: DISCORD_TOKEN is not set: put the bot token from the Discord developer "
              "portal in the environment.", file=sys.stderr)
        return 2
    if args.verbose == 0:
        # A server process: say what it does (the token is never logged).
        logging.getLogger().setLevel(logging.INFO)
        for name in ("discord", "discord.gateway", "discord.http", "discord.client"):
            logging.getLogger(name).setLevel(logging.WARNING)
    from bot.client import run_bot  # discord.py loads only for this command

    try:
        return asyncio.run(run_bot(settings))
    except KeyboardInterrupt:
        return 130


def cmd_worker(settings: Settings, args) -> int:
    from storage.images import ImageStore
    from worker.queue import LocalJobQueue
    from worker.runner import Worker

    async def go() -> int:
        async with LocalJobQueue(settings.db_path) as queue:
            worker = Worker(queue, ImageStore(settings.image_dir), settings)
            try:
                n = await worker.run(burst=args.burst)
            finally:
                await worker.shutdown()
        print(f"worker ran {n} job(s)", file=sys.stderr)
        return 0

    try:
        return asyncio.run(go())
    except KeyboardInterrupt:
        return 130


def parse_options(items: list[str] | None) -> dict:
    """--option KEY=VALUE pairs; values are JSON where they parse (numbers, lists, true)."""
    options = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InvalidRequest(f"--option takes KEY=VALUE, not {item!r}.")
        try:
            options[key.strip()] = json.loads(raw)
        except ValueError:
            options[key.strip()] = raw  # a plain string
    return options


def cmd_train(settings: Settings, args) -> int:
    from generators.device import pick_device
    from generators.training import train

    out = Path(args.out).expanduser()
    options = parse_options(args.option)
    device = pick_device(settings.device)
    started = time.time()
    print(f"training {args.kind} on {args.data} with {device} into {out}", file=sys.stderr)
    train(args.kind, args.data, out, epochs=args.epochs, size=args.size, seed=args.seed,
          resume=args.resume, device=device, holdout=args.holdout, init=args.init,
          options=options)
    print(f"{out}: trained in {time.time() - started:.0f}s; sample grids in {out / 'samples'}")
    print(f"draw with: artbot draw \"a red heart\" --model {out}")
    return 0
