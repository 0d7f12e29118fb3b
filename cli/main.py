"""The `artbot` command line.

    artbot draw PROMPT [--model M] [--negative TEXT] [--seed N] [--steps N]
                       [--guidance F] [--size WxH] [--count N] [--out PATH]
    artbot vary IMAGE [--strength F] [--prompt TEXT] [--seed N] [--model M] [--out PATH]
    artbot stylize CONTENT (--style IMAGE | --preset NAME | --prompt TEXT)
                   [--method gatys|adain|diffusion] [--size N] [--steps N] [--strength F]
                   [--seed N] [--out PATH]
    artbot preset add NAME IMAGE | list | remove NAME
    artbot settings show|audit GUILD | set GUILD KEY VALUE | unset GUILD KEY [--channel ID]
    artbot history [--limit N]
    artbot jobs
    artbot cancel JOB_ID
    artbot worker [--burst]
    artbot run                      # the Discord bot with a local worker
    artbot train gan|vae|diffusion --data DIR|emoji --out DIR [--epochs N] [--size 64]
                                    [--resume] [--seed N]

`draw` and `vary` go through the same queue, worker and storage as the bot:
the job is queued in the database, a worker in this process runs it (or a
running bot's worker does, whichever claims it first), and the images and
their seeds land in the history.

Exit status: 0 on success, 1 when a job failed or a model is missing, 2 for a
bad option or input, 130 when interrupted (the job is canceled).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from artbot import __version__
from artbot.config import Settings, load_settings
from artbot.errors import InvalidRequest, UserError

log = logging.getLogger("artbot")
# The keys of `artbot settings` (worker.policy.KEYS), listed here so --help needs no import.
SETTING_KEYS = ("default_model", "allowed_models", "allowed_families", "max_steps", "max_size",
                "max_count", "daily_quota", "max_queued", "cooldown", "role_quotas", "channels",
                "blocklist", "spoiler", "safety_checker", "delete_by")


# -- helpers ------------------------------------------------------------------


def _local_user() -> str:
    try:
        name = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        name = "unknown"
    return f"local:{name}"


def _output_paths(out: str | None, job_id: int, count: int) -> list[Path]:
    if out is None:
        base = Path(f"artbot-{job_id}.png")
    else:
        base = Path(out)
        if base.suffix.lower() != ".png":
            base = base.with_name(base.name + ".png") if not base.suffix else base.with_suffix(".png")
    if count == 1:
        return [base]
    return [base.with_name(f"{base.stem}-{i + 1}{base.suffix}") for i in range(count)]


def _check_out(out: str | None) -> None:
    if out is None:
        return
    parent = Path(out).expanduser().resolve().parent
    if not parent.is_dir():
        raise InvalidRequest(f"Cannot write {out}: folder {parent} does not exist.")


async def _run_job(settings: Settings, spec, out: str | None, state: dict,
                   server: str | None = None) -> int:
    """Queue `spec`, run a worker here until it finishes, and save its images.

    With `server` (a Discord guild id) the job is queued for that server: its
    rules, quota and history apply, exactly as for a member there."""
    from storage.images import ImageStore
    from worker.queue import LocalJobQueue
    from worker.runner import Worker

    queue = await LocalJobQueue(settings.db_path).open()
    store = ImageStore(settings.image_dir)
    try:
        from worker.policy import Requester

        job = await queue.submit(
            spec,
            requester=Requester(user_id=_local_user(), source="cli", server_id=server),
            settings=settings,
        )
        state["job_id"] = job.id
        position = (await queue.positions()).get(job.id)
        print(f"job {job.id} queued" + (f" (position {position})" if position else ""), file=sys.stderr)

        events = queue.subscribe(job.id)
        worker = Worker(queue, store, settings)
        worker_task = asyncio.create_task(worker.run(burst=True))
        bar = None
        told_waiting = False
        try:
            while True:
                try:
                    event = await events.get(timeout=0.5)
                except asyncio.TimeoutError:
                    event = None
                if event is not None and event.kind == "progress" and event.total:
                    if bar is None:
                        from tqdm import tqdm

                        bar = tqdm(total=event.total, unit="step", desc=f"job {job.id}",
                                   file=sys.stderr, disable=None, leave=False)
                    bar.total = event.total
                    bar.n = event.step
                    bar.refresh()
                current = await queue.get(job.id)
                if current.status.finished:
                    break
                if worker_task.done():
                    worker_task.result()  # re-raise a crash of the worker itself
                    if not told_waiting and current.status.value == "running":
                        print(f"job {job.id} is running in another artbot process; waiting",
                              file=sys.stderr)
                        told_waiting = True
                    await asyncio.sleep(0.2)
        finally:
            if bar is not None:
                bar.close()
            events.close()
            worker.stop()
            await worker_task

        if current.status.value != "succeeded":
            print(f"error: job {job.id} {current.status.value}: {current.error}", file=sys.stderr)
            return 1
        images = await queue.images(job.id)
        for record, path in zip(images, _output_paths(out, job.id, len(images))):
            path = path.expanduser()
            shutil.copyfile(store.root / record.path, path)
            print(f"{path}  seed {record.seed}  {record.width}x{record.height}")
        print(f"job {job.id} done in {current.run_seconds:.1f}s with {current.model}", file=sys.stderr)
        note = current.params.get("note")
        if note:
            print(f"note: {note}", file=sys.stderr)
        return 0
    finally:
        await queue.close()


def _run_spec(settings: Settings, spec, out: str | None, server: str | None = None) -> int:
    state: dict = {}
    try:
        return asyncio.run(_run_job(settings, spec, out, state, server))
    except KeyboardInterrupt:
        if "job_id" in state:
            from storage.db import open_db
            from storage.jobs import JobStore

            JobStore(open_db(settings.db_path)).cancel(state["job_id"])
            print(f"\ninterrupted: job {state['job_id']} canceled", file=sys.stderr)
        return 130


def _for_server(settings: Settings, args) -> Settings:
    """The settings a request is built with: with --server, that server's defaults and limits."""
    server = getattr(args, "server", None)
    if not server:
        return settings
    from worker.policy import Policy

    if not server.isdigit():
        raise InvalidRequest(f"--server takes a Discord server id (digits), not {server!r}.")
    return Policy.load(_store(settings).settings, settings, server).apply(settings)


# -- commands -----------------------------------------------------------------


def cmd_draw(settings: Settings, args) -> int:
    from worker.jobs import build_draw

    _check_out(args.out)
    operator, settings = settings, _for_server(settings, args)
    spec = build_draw(
        settings,
        prompt=args.prompt,
        negative_prompt=args.negative or "",
        model=args.model,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        size=args.size,
        count=args.count,
    )
    return _run_spec(operator, spec, args.out, args.server)


def cmd_vary(settings: Settings, args) -> int:
    from storage.images import ImageStore, encode_png
    from worker.jobs import build_vary, read_input_image

    _check_out(args.out)
    operator, settings = settings, _for_server(settings, args)
    path = Path(args.image).expanduser()
    if not path.is_file():
        raise InvalidRequest(f"{args.image} does not exist or is not a file.")
    image = read_input_image(path.read_bytes(), name=str(args.image))
    # Validate everything before anything is stored.
    spec = build_vary(
        settings,
        init_image_sha="0" * 64,
        init_size=image.size,
        prompt=args.prompt or "",
        negative_prompt=args.negative or "",
        model=args.model,
        strength=args.strength,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        count=args.count,
    )
    sha, _ = ImageStore(settings.image_dir).put_bytes(encode_png(image))
    spec.params["init_image"] = sha
    return _run_spec(operator, spec, args.out, args.server)


def _store_input_image(settings: Settings, path_text: str, what: str) -> tuple[str, tuple[int, int]]:
    """Read an image file given on the command line into the store: (sha256, size)."""
    from storage.images import ImageStore, encode_png
    from worker.jobs import read_input_image

    path = Path(path_text).expanduser()
    if not path.is_file():
        raise InvalidRequest(f"{what} {path_text} does not exist or is not a file.")
    image = read_input_image(path.read_bytes(), name=str(path_text))
    sha, _ = ImageStore(settings.image_dir).put_bytes(encode_png(image))
    return sha, image.size


def cmd_stylize(settings: Settings, args) -> int:
    from worker.jobs import build_stylize

    _check_out(args.out)
    operator, settings = settings, _for_server(settings, args)
    given = [x for x in (args.style, args.preset, args.prompt) if x]
    if len(given) != 1:
        raise InvalidRequest("Give exactly one of --style IMAGE, --preset NAME or --prompt TEXT.")
    content_path = Path(args.content).expanduser()
    if not content_path.is_file():
        raise InvalidRequest(f"Content image {args.content} does not exist or is not a file.")
    from worker.jobs import read_input_image

    content = read_input_image(content_path.read_bytes(), name=str(args.content))
    style_sha = None
    if args.style:
        style_path = Path(args.style).expanduser()
        if not style_path.is_file():
            raise InvalidRequest(f"Style image {args.style} does not exist or is not a file.")
        read_input_image(style_path.read_bytes(), name=str(args.style))
    elif args.preset:
        preset = _store(settings).preset(args.server, args.preset)
        if preset is None:
            raise InvalidRequest(f"There is no preset {args.preset!r}; see: artbot preset list")
        style_sha = preset["image_sha"]
    # Check every option before anything is stored.
    build_stylize(settings, content_sha="0" * 64, content_size=content.size,
                  style_sha=style_sha or ("0" * 64 if args.style else None), prompt=args.prompt,
                  method=args.method, size=args.size, steps=args.steps, strength=args.strength,
                  seed=args.seed, keep_colors=args.keep_colors, model=args.model)
    content_sha, _ = _store_input_image(settings, args.content, "Content image")
    if args.style:
        style_sha, _ = _store_input_image(settings, args.style, "Style image")
    spec = build_stylize(settings, content_sha=content_sha, content_size=content.size,
                         style_sha=style_sha, prompt=args.prompt, method=args.method,
                         size=args.size, steps=args.steps, strength=args.strength, seed=args.seed,
                         keep_colors=args.keep_colors, model=args.model, preset=args.preset)
    return _run_spec(operator, spec, args.out, args.server)


def cmd_preset(settings: Settings, args) -> int:
    store = _store(settings)
    if args.action == "list":
        presets = store.presets(None)
        if not presets:
            print("No presets. Add one: artbot preset add NAME IMAGE")
        for p in presets:
            print(f"{p['name']:24} {p['image_sha'][:12]}  {_when(p['created_at'])}")
        return 0
    if not args.name:
        raise InvalidRequest(f"preset {args.action} needs a NAME.")
    if args.action == "add":
        if not args.image:
            raise InvalidRequest("preset add needs NAME and IMAGE.")
        sha, _ = _store_input_image(settings, args.image, "Style image")
        store.save_preset(None, args.name, sha, _local_user())
        print(f"preset {args.name} saved")
        return 0
    if not store.delete_preset(None, args.name):
        raise InvalidRequest(f"There is no operator-wide preset {args.name!r}.")
    print(f"preset {args.name} removed")
    return 0


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _store(settings: Settings):
    from storage.db import open_db
    from storage.jobs import JobStore

    return JobStore(open_db(settings.db_path))


def cmd_history(settings: Settings, args) -> int:
    if args.limit < 1:
        raise InvalidRequest("--limit must be at least 1.")
    store = _store(settings)
    jobs = store.list_jobs(limit=args.limit)
    if not jobs:
        print("No jobs yet. Try: artbot draw \"a red fox\"")
        return 0
    print(f"{'ID':>5}  {'TIME':19}  {'STATUS':9}  {'KIND':5}  {'MODEL':24}  {'SEEDS':22}  PROMPT")
    for job in jobs:
        seeds = ",".join(str(s) for s in job.seeds)
        prompt = job.params.get("prompt", "")
        if job.kind == "vary" and not prompt:
            prompt = "(variation)"
        line = (
            f"{job.id:>5}  {_when(job.created_at):19}  {job.status.value:9}  {job.kind:5}  "
            f"{_clip(job.model, 24):24}  {_clip(seeds, 22):22}  {_clip(prompt, 60)}"
        )
        print(line)
        if job.status.value == "failed" and job.error:
            print(f"{'':>7}error: {_clip(job.error, 100)}")
    return 0


def cmd_jobs(settings: Settings, args) -> int:
    from storage.jobs import JobStatus

    store = _store(settings)
    running = store.list_jobs(statuses=[JobStatus.RUNNING], limit=100, newest_first=False)
    queued = store.list_jobs(statuses=[JobStatus.QUEUED], limit=1000, newest_first=False)
    positions = store.positions()
    if not running and not queued:
        print("Nothing queued or running.")
        return 0
    for job in running:
        progress = (
            f"step {job.progress_step} of {job.progress_total}" if job.progress_total else "starting"
        )
        since = time.time() - (job.started_at or time.time())
        print(f"running  job {job.id:>5}  {progress:18}  {since:6.1f}s  {job.user_id}  "
              f"{_clip(job.params.get('prompt', ''), 50)}")
    for job in sorted(queued, key=lambda j: positions.get(j.id, 0)):
        print(f"queued   job {job.id:>5}  position {positions.get(job.id, '?'):<9}  "
              f"{'':7}  {job.user_id}  {_clip(job.params.get('prompt', ''), 50)}")
    return 0


def cmd_cancel(settings: Settings, args) -> int:
    status = _store(settings).cancel(args.job_id)
    if status is None:
        raise InvalidRequest(f"There is no job {args.job_id}.")
    if status.value == "running":
        print(f"job {args.job_id} is running; it will stop at its next step")
    elif status.value == "canceled":
        print(f"job {args.job_id} canceled")
    else:
        print(f"job {args.job_id} had already finished ({status.value})")
    return 0


def cmd_settings(settings: Settings, args) -> int:
    """`artbot settings show|set|unset|audit GUILD ...`: a server's rules, for the operator."""
    from worker.policy import KEYS, Policy, change_setting, format_value, key_of

    server = args.guild
    if not server.isdigit():
        raise InvalidRequest(f"GUILD is a Discord server id (digits), not {server!r}.")
    channel = args.channel
    if channel is not None and not channel.isdigit():
        raise InvalidRequest(f"--channel takes a channel id (digits), not {channel!r}.")
    store = _store(settings).settings
    if args.action in ("set", "unset"):
        if not args.key or (args.action == "set" and args.value is None):
            raise InvalidRequest(f"settings {args.action} needs GUILD KEY"
                                 + (" VALUE." if args.action == "set" else "."))
        changed = change_setting(store, settings, server, args.key,
                                 args.value if args.action == "set" else None,
                                 actor=_local_user(), via="cli", channel_id=channel)
        key = key_of(args.key).name
        where = f"channel {channel}" if channel else f"server {server}"
        if changed is None:
            print(f"{key} unchanged for {where}")
        else:
            value = Policy.load(store, settings, server, channel)[key]
            print(f"{key} = {format_value(key, value, mentions=False)} for {where}")
        return 0
    if args.action == "audit":
        entries = store.audit(server, limit=args.limit)
        if not entries:
            print(f"No changes recorded for server {server}.")
        for e in entries:
            print(_audit_line(e))
        return 0
    policy = Policy.load(store, settings, server, channel)
    print(f"server {server}" + (f", channel {channel}" if channel else ""))
    for name in KEYS:
        print(f"  {name:17} {format_value(name, policy[name], mentions=False):30} "
              f"({policy.source(name)})")
    if not channel:
        for channel_id, values in store.channel_overrides(server).items():
            shown = ", ".join(f"{k}={format_value(k, v, mentions=False)}" for k, v in values.items())
            print(f"  channel {channel_id}: {shown}")
    entries = store.audit(server, limit=5)
    if entries:
        print("recent changes:")
        for e in entries:
            print("  " + _audit_line(e))
    return 0


def _audit_line(entry) -> str:
    from worker.policy import format_value

    def shown(value):
        return "(default)" if value is None else format_value(entry.key, value, mentions=False)

    where = f" in channel {entry.channel_id}" if entry.channel_id else ""
    return (f"{_when(entry.created_at)}  {entry.actor} ({entry.via})  {entry.key}{where}: "
            f"{shown(entry.old_value)} -> {shown(entry.new_value)}")


def cmd_train(settings: Settings, args) -> int:
    from generators.device import pick_device
    from generators.training import train

    out = Path(args.out).expanduser()
    options = {}
    for item in args.option or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InvalidRequest(f"--option takes KEY=VALUE, not {item!r}.")
        try:
            options[key.strip()] = json.loads(raw)  # numbers, lists, true/false
        except ValueError:
            options[key.strip()] = raw  # a plain string
    device = pick_device(settings.device)
    started = time.time()
    print(f"training {args.kind} on {args.data} with {device} into {out}", file=sys.stderr)
    train(args.kind, args.data, out, epochs=args.epochs, size=args.size, seed=args.seed,
          resume=args.resume, device=device, holdout=args.holdout, init=args.init,
          options=options)
    print(f"{out}: trained in {time.time() - started:.0f}s; sample grids in {out / 'samples'}")
    print(f"draw with: artbot draw \"a red heart\" --model {out}")
    return 0


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
    from bot.client import run_bot

    try:
        return asyncio.run(run_bot(settings))
    except KeyboardInterrupt:
        return 130


def cmd_worker(settings: Settings, args) -> int:
    from storage.images import ImageStore
    from worker.queue import LocalJobQueue
    from worker.runner import Worker

    async def go() -> int:
        queue = await LocalJobQueue(settings.db_path).open()
        worker = Worker(queue, ImageStore(settings.image_dir), settings)
        try:
            n = await worker.run(burst=args.burst)
        finally:
            await worker.shutdown()
            await queue.close()
        print(f"worker ran {n} job(s)", file=sys.stderr)
        return 0

    try:
        return asyncio.run(go())
    except KeyboardInterrupt:
        return 130


# -- parser -------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="artbot",
        description="artbot: a self-hosted AI art bot. Draw and vary images from the shell "
        "through the same queue, worker and history as the Discord bot.",
    )
    parser.add_argument("--version", action="version", version=f"artbot {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v: job life, -vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("draw", help="draw images from a text prompt",
                       description="Draw images from a text prompt.")
    p.add_argument("prompt", help="what to draw")
    p.add_argument("--model", help="hub id, local folder, .safetensors file or configured name "
                   "(default: the configured default model)")
    p.add_argument("--negative", help="what to keep out of the image")
    p.add_argument("--seed", type=_positive_int, help="seed of the first image (random if not given)")
    p.add_argument("--steps", type=_positive_int, help="denoising steps (default: the default_steps setting, 30)")
    p.add_argument("--guidance", type=float, help="how closely to follow the prompt (default 7.5)")
    p.add_argument("--size", help="WIDTHxHEIGHT, multiples of 8 (default: the default_size setting, 512x512)")
    p.add_argument("--count", type=_positive_int, default=1, help="how many images (default 1)")
    p.add_argument("--out", help="output PNG path (with --count N: PATH-1.png ... PATH-N.png)")
    p.add_argument("--server", metavar="GUILD",
                   help="act for this Discord server: its rules, quota and history apply")
    p.set_defaults(func=cmd_draw)

    p = sub.add_parser("vary", help="make a variation of an image",
                       description="Make a variation of an image (image to image).")
    p.add_argument("image", help="the image to vary (PNG, JPEG, WebP...)")
    p.add_argument("--strength", type=float,
                   help="how far to move from the image, 0..1 (default 0.6; 0.3 subtle, 0.75 strong)")
    p.add_argument("--prompt", help="what the variation should show (optional)")
    p.add_argument("--negative", help="what to keep out of the image")
    p.add_argument("--seed", type=_positive_int, help="seed (random if not given)")
    p.add_argument("--model", help="model, as for draw")
    p.add_argument("--steps", type=_positive_int, help="denoising steps before strength (default 30)")
    p.add_argument("--guidance", type=float, help="prompt guidance (default 7.5)")
    p.add_argument("--count", type=_positive_int, default=1, help="how many variations (default 1)")
    p.add_argument("--out", help="output PNG path")
    p.add_argument("--server", metavar="GUILD",
                   help="act for this Discord server: its rules, quota and history apply")
    p.set_defaults(func=cmd_vary)

    p = sub.add_parser("stylize", help="restyle an image: like a style image, a preset, or a prompt",
                       description="Neural style transfer: gatys (optimisation, works with no "
                       "downloads), adain (fast; needs VGG-19 and decoder weights), or diffusion "
                       "(restyle by a text prompt).")
    p.add_argument("content", help="the image to restyle")
    p.add_argument("--style", help="a style image")
    p.add_argument("--preset", help="a saved style preset (artbot preset list)")
    p.add_argument("--prompt", help="a style described in words (method diffusion)")
    p.add_argument("--method", choices=["gatys", "adain", "diffusion"],
                   help="default: gatys with a style image, diffusion with a prompt")
    p.add_argument("--size", type=_positive_int, help="longest side of the result (default 256)")
    p.add_argument("--steps", type=_positive_int,
                   help="gatys: optimisation steps (default 100); diffusion: denoising steps")
    p.add_argument("--strength", type=float,
                   help="gatys: style weight (default 1, up to 10); adain: alpha 0..1; diffusion: 0..1")
    p.add_argument("--keep-colors", action="store_true", help="keep the content's colours")
    p.add_argument("--model", help="diffusion method: the model (default: the default model)")
    p.add_argument("--seed", type=_positive_int, help="seed")
    p.add_argument("--out", help="output PNG path")
    p.add_argument("--server", metavar="GUILD",
                   help="act for this Discord server: its rules, quota and history apply")
    p.set_defaults(func=cmd_stylize)

    p = sub.add_parser("preset", help="operator-wide style presets for stylize",
                       description="Named style images usable as --preset (and in every Discord "
                       "server's /stylize).")
    p.add_argument("action", choices=["add", "list", "remove"])
    p.add_argument("name", nargs="?")
    p.add_argument("image", nargs="?")
    p.set_defaults(func=cmd_preset)

    p = sub.add_parser("history", help="list recent jobs with their prompts and seeds",
                       description="List recent jobs: prompt, model, the seed of each image, status, time.")
    p.add_argument("--limit", type=_positive_int, default=20, help="how many jobs (default 20)")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("jobs", help="show what is queued and running",
                       description="Show the queue in the order jobs will run, and what is running.")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("cancel", help="cancel a queued or running job",
                       description="Cancel a job: a queued one at once, a running one at its next step.")
    p.add_argument("job_id", type=_positive_int)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("train", help="train a GAN, VAE or small diffusion model on your images",
                       description="Train a model on a folder of images (subfolders become "
                       "labels, file names captions) or on the emoji set (fetched with npm once). "
                       "Writes config.json, model.safetensors, a sample grid per epoch and a "
                       "resumable checkpoint to --out; the folder is then usable as --model.")
    p.add_argument("kind", choices=["gan", "vae", "diffusion"], help="what to train")
    p.add_argument("--data", required=True, help="a folder of images, or 'emoji'")
    p.add_argument("--out", required=True, help="folder for the model")
    p.add_argument("--epochs", type=_positive_int, default=10, help="passes over the data (default 10)")
    p.add_argument("--size", type=_positive_int, default=64, help="image size in pixels (default 64)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--seed", type=_positive_int, default=0, help="seed; the same seed gives the same model")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a model or training option, e.g. --option lr=0.001 --option "
                   "mode_seeking=0 (repeatable; an unknown key lists the known ones)")
    p.add_argument("--init", metavar="MODEL",
                   help="start from this trained model's weights (a folder or a bundled name such "
                   "as emoji-diffusion); the optimiser starts afresh")
    p.add_argument("--holdout", type=float, default=0.0,
                   help="share of the images kept out of training, for held-out metrics (default 0)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("settings", help="a Discord server's rules: quotas, models, limits, blocklist",
                       description="Show or change the rules of one Discord server (GUILD is its "
                       "id), as its admins do with /settings; every change is audited. "
                       "Keys: " + ", ".join(SETTING_KEYS) + ". Lists take 'a, b' (replace), '+a' (add), '-a' (remove; write "
                       "'-- -a' so it is not read as an option) or 'all'.")
    p.add_argument("action", choices=["show", "set", "unset", "audit"])
    p.add_argument("guild", metavar="GUILD", help="the Discord server id")
    p.add_argument("key", nargs="?", metavar="KEY")
    p.add_argument("value", nargs="?", metavar="VALUE")
    p.add_argument("--channel", help="a channel id: show or change that channel's overrides")
    p.add_argument("--limit", type=_positive_int, default=20, help="audit: how many changes")
    p.set_defaults(func=cmd_settings)

    p = sub.add_parser("run", help="run the Discord bot with a local worker",
                       description="Run the Discord bot and a local worker in one process. "
                       "Needs DISCORD_TOKEN; ARTBOT_DISCORD_API_BASE and ARTBOT_DISCORD_GATEWAY "
                       "point it at a Discord-compatible server, ARTBOT_DEV_GUILD syncs commands "
                       "to one server only. SIGTERM stops it cleanly: running jobs are queued "
                       "again for the next start.")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("worker", help="run a worker that takes jobs from the queue",
                       description="Run a worker on this machine's device until interrupted.")
    p.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    p.set_defaults(func=cmd_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:
        # Library chatter (deprecation notes, "loading weights") is not for the user.
        import warnings

        warnings.filterwarnings("ignore")
        for name in ("diffusers", "transformers", "huggingface_hub", "httpx"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        settings = load_settings()
        return args.func(settings, args)
    except UserError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
