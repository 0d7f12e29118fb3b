"""The long-running commands: the Discord bot, a worker, and training."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
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
    if settings.local_worker:
        _check_signing(settings)
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


def _check_signing(settings: Settings) -> None:
    """A worker whose C2PA signing is set up and cannot sign says so before it runs a
    job (a `SigningFault`: one line, exit 1), not in each job's error."""
    from worker.provenance import check_c2pa

    if check_c2pa(settings):
        print(f"C2PA: every image is signed with the certificate {settings.c2pa_cert}",
              file=sys.stderr)


def _server_logging(args) -> None:
    """A long-running process says what it does (one line per job), unless told otherwise."""
    if args.verbose == 0:
        logging.getLogger().setLevel(logging.INFO)


def _stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT (Ctrl-C) set `stop`: the command then hands its running jobs
    back to the queue and exits, as `artbot run` does."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            pass


def _metrics_port(settings: Settings, args) -> int:
    port = getattr(args, "metrics_port", None)
    return settings.metrics_port if port is None else port


async def _serve_health(worker, settings: Settings, port: int, extra=None):
    if not port:
        return None
    from worker.health import serve_worker_health

    server = await serve_worker_health(worker, settings.metrics_host, port, extra=extra)
    print(f"/healthz and /metrics on http://{settings.metrics_host}:{port}", file=sys.stderr)
    return server


def cmd_worker(settings: Settings, args) -> int:
    url = args.connect or (None if args.burst else settings.redis_url)
    _check_signing(settings)
    if url:
        return _remote_worker(settings, args, url)
    if args.name or args.models:
        raise InvalidRequest("--name and --models are for a remote worker (--connect URL).")
    from storage.images import ImageStore
    from worker.privacy import keep_expiring
    from worker.queue import LocalJobQueue
    from worker.runner import Worker

    async def go() -> int:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        async with LocalJobQueue(settings.db_path) as queue:
            images = ImageStore(settings.image_dir)
            worker = Worker(queue, images, settings)
            health = await _serve_health(worker, settings, _metrics_port(settings, args))
            running = asyncio.create_task(worker.run(burst=args.burst))
            stopper = asyncio.create_task(stop.wait())
            # A worker that serves the data directory applies the servers' retention too.
            expiring = None if args.burst else asyncio.create_task(keep_expiring(queue, images))
            try:
                await asyncio.wait({running, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                if expiring is not None:
                    expiring.cancel()
                # Jobs still running go back on the queue at once, not at their lease's end.
                await worker.shutdown()
                if not running.done():
                    await asyncio.wait({running}, timeout=10)
                if health is not None:
                    await health.close()
            n = running.result() if running.done() and not running.cancelled() else worker.jobs_done
        print(f"worker ran {n} job(s)", file=sys.stderr)
        return 0

    if not args.burst:
        _server_logging(args)
    try:
        return asyncio.run(go())
    except KeyboardInterrupt:
        return 130


def _remote_worker(settings: Settings, args, url: str) -> int:
    """`artbot worker --connect URL`: serve a bot on another machine through Redis."""
    from worker.remote import check_worker_name, serve_remote

    if args.burst:
        raise InvalidRequest("--burst is for a worker on the bot's own data directory, "
                         "not with --connect.")
    if args.name:
        try:
            check_worker_name(args.name)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
    serves = [m for m in (args.models or "").split(",") if m.strip()] or None

    async def go() -> int:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        health = None

        async def started(worker, queue) -> None:
            nonlocal health
            health = await _serve_health(worker, settings, _metrics_port(settings, args),
                                         extra=queue.check)

        try:
            n = await serve_remote(settings, url, name=args.name, serves=serves,
                                   started=started, stop=stop)
        finally:
            if health is not None:
                await health.close()
        print(f"worker ran {n} job(s)", file=sys.stderr)
        return 0

    _server_logging(args)
    try:
        return asyncio.run(go())
    except KeyboardInterrupt:
        return 0


def cmd_dispatch(settings: Settings, args) -> int:
    """`artbot dispatch`: hand this data directory's jobs to remote workers, no Discord."""
    url = args.connect or settings.redis_url
    if not url:
        raise InvalidRequest("artbot dispatch needs a Redis URL: --connect redis://HOST:PORT "
                             "or ARTBOT_REDIS_URL.")
    from storage.images import ImageStore
    from worker.dispatcher import Dispatcher
    from worker.queue import LocalJobQueue

    async def go() -> int:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        async with LocalJobQueue(settings.db_path) as queue:
            dispatcher = await Dispatcher(queue, ImageStore(settings.image_dir), settings,
                                          url=url).start()
            health = None
            port = _metrics_port(settings, args)
            if port:
                from worker.health import serve_queue_health

                health, _ = await serve_queue_health(queue, settings.metrics_host, port,
                                                     dispatcher=dispatcher)
                print(f"/healthz and /metrics on http://{settings.metrics_host}:{port}",
                      file=sys.stderr)
            try:
                await stop.wait()
            finally:
                await dispatcher.close()
                if health is not None:
                    await health.close()
        return 0

    _server_logging(args)
    return asyncio.run(go())


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
