"""The `artbot` command line.

    artbot draw PROMPT [--model M] [--negative TEXT] [--seed N] [--steps N]
                       [--guidance F] [--sampler NAME] [--size WxH] [--count N] [--out PATH]
    artbot vary IMAGE [--strength F] [--prompt TEXT] [--seed N] [--model M] [--out PATH]
    artbot stylize CONTENT (--style IMAGE | --preset NAME | --prompt TEXT)
                   [--method gatys|adain|diffusion] [--size N] [--steps N] [--strength F]
                   [--seed N] [--out PATH]
    artbot upscale JOB|IMAGE [--scale 2|4] [--image N]
    artbot zoom JOB|IMAGE [--by 1.5|2]      artbot pan JOB|IMAGE left|right|up|down
    artbot blend IMAGE IMAGE [...] [--prompt TEXT] [--model M]
    artbot describe JOB|IMAGE
    artbot preset add NAME IMAGE | list | remove NAME
    artbot settings show|audit GUILD | set GUILD KEY VALUE | unset GUILD KEY [--channel ID]
    artbot history [--limit N] [--user USER] [--export FILE]
    artbot forget USER [--server GUILD] [--yes] | --expired
    artbot jobs
    artbot workers
    artbot cancel JOB_ID
    artbot doctor [--repair] [--quick]   # check the data directory
    artbot backup PATH [--force]        # a consistent copy of the database
    artbot worker [--burst] [--connect redis://HOST:PORT [--name NAME] [--models A,B]]
    artbot dispatch [--connect redis://HOST:PORT]   # jobs to remote workers, no Discord
    artbot run                      # the Discord bot with a local worker
    artbot train gan|vae|diffusion --data DIR|emoji --out DIR [--epochs N] [--size 64]
                                    [--resume] [--seed N]

`draw`, `vary` and `stylize` go through the same queue, gate, worker and
storage as the bot: the job is queued in the database; when a worker already
serves the data directory (`artbot run`, `artbot worker`), it runs the job and
the CLI waits for it; otherwise a worker in this process runs it. The images
and their seeds land in the history. The commands themselves live in
`cli.requests`, `cli.listing`, `cli.rules` and `cli.serve`; this module is the
parser.

Exit status: 0 on success, 1 when a job failed or a model is missing, 2 for a
bad option or input, 130 when interrupted (the job is canceled).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys

from artbot import __version__
from artbot.config import load_settings
from artbot.errors import UserError
from cli.fleet import cmd_workers
from cli.listing import cmd_cancel, cmd_history, cmd_jobs
from cli.maintenance import cmd_backup, cmd_doctor
from cli.models import cmd_models
from cli.privacy import cmd_forget
from cli.requests import (cmd_blend, cmd_describe, cmd_draw, cmd_outpaint, cmd_stylize,
                          cmd_upscale, cmd_vary)
from cli.rules import cmd_preset, cmd_settings
from cli.serve import cmd_dispatch, cmd_run, cmd_train, cmd_worker
from cli.terminal import safe
from worker.requests import shown
from storage.faults import STORAGE_ERRORS, explain
from worker.server_settings import KEYS

log = logging.getLogger("artbot")


# -- parser -------------------------------------------------------------------


def _whole_number(text: str, least: int = 0) -> int:
    """An option that takes a whole number of at least `least`, in ASCII digits."""
    digits = text.strip()
    if not re.fullmatch(r"-?[0-9]{1,30}", digits):
        raise argparse.ArgumentTypeError(f"{safe(shown(text))} is not a whole number")
    value = int(digits)
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {least} or more, not {value}")
    return value


def _positive_int(text: str) -> int:
    """A count, a number of steps, an image number, a job id: 1 or more."""
    return _whole_number(text, 1)


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake said the way every other error is: `error: ...` and
    where to look, not the whole usage text."""

    def error(self, message: str):
        self.exit(2, f"error: {safe(message)}\n(see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    p.add_argument("--seed", type=_whole_number, help="seed of the first image (random if not given)")
    p.add_argument("--steps", type=_positive_int, help="denoising steps (default: the model's own: "
                   "30 for SD and SDXL, 4 for Turbo and Flux schnell, see `artbot models`)")
    p.add_argument("--guidance", type=float, help="how closely to follow the prompt (default: the "
                   "model's own, e.g. 7.5 for SD 1.x, 3.5 for Flux dev, 0 for Turbo)")
    p.add_argument("--sampler", help="diffusers models: a sampler by its A1111 or ComfyUI name, "
                   "e.g. 'DPM++ 2M Karras', 'Euler a', dpmpp_2m (default: the model's own)")
    p.add_argument("--lora", action="append", metavar="NAME[:WEIGHT]",
                   help="apply a LoRA from the lora_dir folder (repeatable; or write "
                   "<lora:NAME:0.8> in the prompt)")
    p.add_argument("--size", help="WIDTHxHEIGHT, multiples of 8 (16 for SD3, Flux, "
                   "PixArt) (default: the model's native size, e.g. 1024x1024 for SDXL)")
    p.add_argument("--count", type=_positive_int, default=1, help="how many images (default 1)")
    p.add_argument("--style", metavar="IMAGE", help="a style reference: the images are restyled "
                   "like it after drawing")
    p.add_argument("--style-method", choices=["adain", "gatys"],
                   help="how --style is applied (default: adain with a configured decoder, else gatys)")
    p.add_argument("--out", help="output PNG path (with --count N: PATH-1.png ... PATH-N.png)")
    p.add_argument("--server", metavar="GUILD",
                   help="act for this Discord server: its rules, quota and history apply")
    p.set_defaults(func=cmd_draw)

    def tool_source(p):
        p.add_argument("source", help="a job id (its first image, or --image N) or an image file")
        p.add_argument("--image", type=_positive_int, metavar="N",
                       help="which image of the job (default 1)")
        p.add_argument("--model", help="for an image file: the diffusers model that works on it "
                       "(default: the default model)")
        p.add_argument("--out", help="output PNG path")
        p.add_argument("--server", metavar="GUILD",
                       help="act for this Discord server: its rules, quota and history apply")

    p = sub.add_parser("upscale", help="enlarge an image x2 or x4",
                       description="Upscale with the configured upscaler network (upscaler in "
                       "artbot.toml), else by a hires fix with the image's diffusers model.")
    tool_source(p)
    p.add_argument("--scale", type=int, choices=[2, 4], default=2, help="2 or 4 (default 2)")
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser("zoom", help="zoom out: the image on a larger canvas, its border filled",
                       description="Zoom out (outpainting) with a diffusers model.")
    tool_source(p)
    p.add_argument("--by", type=float, choices=[1.5, 2.0], default=2.0,
                   help="how far to zoom out (default 2)")
    p.set_defaults(func=cmd_outpaint)

    p = sub.add_parser("pan", help="extend an image to one side (outpainting)",
                       description="Pan: extend the image by half its width or height.")
    tool_source(p)
    p.add_argument("direction", choices=["left", "right", "up", "down"])
    p.set_defaults(func=cmd_outpaint)

    p = sub.add_parser("blend", help="blend 2 to 5 images into one",
                       description="Blend images: a diffusers model in its latent space, "
                       "emoji-vae in its own, emoji-diffusion from their mean.")
    p.add_argument("images", nargs="+", help="2 to 5 image files")
    p.add_argument("--prompt", help="what the blend should show (optional)")
    p.add_argument("--model", help="model, as for draw")
    p.add_argument("--size", help="WIDTHxHEIGHT (default: the model's own)")
    p.add_argument("--seed", type=_whole_number, help="seed")
    p.add_argument("--out", help="output PNG path")
    p.add_argument("--server", metavar="GUILD",
                   help="act for this Discord server: its rules, quota and history apply")
    p.set_defaults(func=cmd_blend)

    p = sub.add_parser("describe", help="put an image into a few prompts to draw from",
                       description="Describe an image: the configured captioner (captioner in "
                       "artbot.toml), else the bundled emoji classifier.")
    p.add_argument("source", help="a job id or an image file")
    p.add_argument("--image", type=_positive_int, metavar="N", help="which image of the job")
    p.add_argument("--server", metavar="GUILD",
                   help="act for this Discord server: its rules, quota and history apply")
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("vary", help="make a variation of an image",
                       description="Make a variation of an image (image to image).")
    p.add_argument("image", help="the image to vary (PNG, JPEG, WebP...)")
    p.add_argument("--strength", type=float,
                   help="how far to move from the image, 0..1 (default 0.6; 0.3 subtle, 0.75 strong)")
    p.add_argument("--prompt", help="what the variation should show (optional)")
    p.add_argument("--negative", help="what to keep out of the image")
    p.add_argument("--seed", type=_whole_number, help="seed (random if not given)")
    p.add_argument("--model", help="model, as for draw")
    p.add_argument("--steps", type=_positive_int, help="denoising steps before strength (default: the model's own)")
    p.add_argument("--guidance", type=float, help="prompt guidance (default: the model's own)")
    p.add_argument("--sampler", help="a sampler, as for draw")
    p.add_argument("--lora", action="append", metavar="NAME[:WEIGHT]", help="a LoRA, as for draw")
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
    p.add_argument("--seed", type=_whole_number, help="seed")
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

    p = sub.add_parser("models", help="list the models requests may name, with their defaults",
                       description="List the models a request may name: the default model, the "
                       "catalogue in artbot.toml ([models]) and the bundled ones, each with its "
                       "architecture, source, defaults, what it can do, the memory it needs and "
                       "whether a running worker has it loaded. Reads the files; loads nothing.")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("history", help="list recent jobs with their prompts and seeds",
                       description="List recent jobs: prompt, model, the seed of each image, status, time.")
    p.add_argument("--limit", type=_positive_int, default=20, help="how many jobs (default 20)")
    p.add_argument("--user", metavar="USER", help="only this member's jobs: a Discord user id "
                   "or local:NAME")
    p.add_argument("--export", metavar="FILE", help="write every job (of --user, or of everyone) "
                   "with its prompt, seeds and parameters to FILE: JSON, or CSV for a .csv name")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("forget", help="delete a member's jobs, images and message links",
                       description="Delete a member's jobs, their images (files no other job "
                       "uses) and the links to their Discord messages, in one server or every "
                       "server, as /forget does; queued and running jobs are stopped first. "
                       "Asks on a terminal; elsewhere needs --yes. --expired applies every "
                       "server's retention setting now.")
    p.add_argument("user", nargs="?", metavar="USER",
                   help="a Discord user id (or <@ID>), or local:NAME for a command-line user")
    p.add_argument("--server", metavar="GUILD", help="only in this Discord server (default: every server)")
    p.add_argument("--yes", action="store_true", help="do not ask")
    p.add_argument("--expired", action="store_true",
                   help="delete the results older than their server's retention, now")
    p.set_defaults(func=cmd_forget)

    p = sub.add_parser("jobs", help="show what is queued and running",
                       description="Show the queue in the order jobs will run, and what is running.")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("workers", help="show the workers serving this data directory",
                       description="Show every worker, local or remote, seen in the last hour: "
                       "alive or not, its device and memory, the models it has loaded, jobs "
                       "done, the jobs it runs now and when it was last seen.")
    p.set_defaults(func=cmd_workers)

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
    p.add_argument("--seed", type=_whole_number, default=0, help="seed; the same seed gives the same model")
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
                       "Keys: " + ", ".join(KEYS) + ". Lists take 'a, b' (replace), '+a' (add), '-a' (remove; write "
                       "'-- -a' so it is not read as an option) or 'all'.")
    p.add_argument("action", choices=["show", "set", "unset", "audit"])
    p.add_argument("guild", metavar="GUILD", help="the Discord server id")
    p.add_argument("key", nargs="?", metavar="KEY")
    p.add_argument("value", nargs="?", metavar="VALUE")
    p.add_argument("--channel", help="a channel id: show or change that channel's overrides")
    p.add_argument("--limit", type=_positive_int, default=20, help="audit: how many changes")
    p.set_defaults(func=cmd_settings)

    p = sub.add_parser("doctor", help="check the data directory: database, images, free space",
                       description="Check the data directory: the database's integrity and "
                       "migrations, every stored image (there, and its bytes matching its "
                       "sha256), files no job references, jobs left running, free space. "
                       "Exit 1 when it finds a problem.")
    p.add_argument("--repair", action="store_true",
                   help="mark lost images, remove orphan files, requeue abandoned jobs")
    p.add_argument("--quick", action="store_true", help="do not hash every image")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("backup", help="copy the database consistently, even while the bot runs",
                       description="Copy artbot.db with SQLite's backup API: a consistent "
                       "copy while the bot and workers keep writing. PATH is a file, or a "
                       "folder to put artbot-DATE-TIME.db in. The images are files: copy "
                       "the images folder beside it.")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--force", action="store_true", help="replace PATH if it exists")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("run", help="run the Discord bot with a local worker",
                       description="Run the Discord bot and a local worker in one process. "
                       "Needs DISCORD_TOKEN; ARTBOT_DISCORD_API_BASE and ARTBOT_DISCORD_GATEWAY "
                       "point it at a Discord-compatible server, ARTBOT_DEV_GUILD syncs commands "
                       "to one server only. SIGTERM stops it cleanly: running jobs are queued "
                       "again for the next start.")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("worker", help="run a worker that takes jobs from the queue",
                       description="Run a worker on this machine's device until interrupted "
                       "(SIGTERM or Ctrl-C hands its running job back to the queue). With "
                       "--connect it serves a bot on another machine through Redis and needs "
                       "nothing of that machine but Redis: its own artbot.toml names the "
                       "models it has (by the bot's catalogue names); a password comes from "
                       "ARTBOT_REDIS_PASSWORD.")
    p.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    p.add_argument("--connect", metavar="URL",
                   help="redis://HOST:PORT (or rediss:// for TLS; an ACL user as "
                   "redis://USER@HOST:PORT): serve the bot whose dispatcher uses this Redis "
                   "(default: ARTBOT_REDIS_URL, if set, unless --burst)")
    p.add_argument("--name", help="with --connect: this worker's id (default host/pid/random); "
                   "fixed names let Redis ACLs be per worker")
    p.add_argument("--models", help="with --connect: the model names it serves, comma-separated "
                   "(default: its catalogue, the bundled models and its default model)")
    p.add_argument("--metrics-port", type=_whole_number,
                   help="serve /healthz and Prometheus /metrics on this port "
                   "(default: ARTBOT_METRICS_PORT; 0: none)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("dispatch", help="hand queued jobs to remote workers (no Discord)",
                       description="Run the dispatcher alone: it hands this data directory's "
                       "queued jobs to the workers connected to ARTBOT_REDIS_URL (or --connect), "
                       "as `artbot run` does beside the bot. For installs that use the command "
                       "line with remote workers.")
    p.add_argument("--connect", metavar="URL", help="the Redis URL (default: ARTBOT_REDIS_URL)")
    p.add_argument("--metrics-port", type=_whole_number,
                   help="serve /healthz and Prometheus /metrics on this port")
    p.set_defaults(func=cmd_dispatch)
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
        print(f"error: {safe(exc.message, newlines=True)}", file=sys.stderr)
        return exc.exit_code
    except STORAGE_ERRORS as exc:
        if isinstance(exc, BrokenPipeError):
            # `artbot history | head`: the reader left. Say nothing more (Python's advice:
            # point stdout at devnull so the flush at exit does not raise again).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        # A fault of the disk or a file that no layer below said in words (an --out
        # path on a full disk, a folder that is read-only): said here, once.
        fault = explain(exc, getattr(exc, "filename", None) or _data_dir())
        if fault is None:
            raise
        print(f"error: {fault.message}", file=sys.stderr)
        return fault.exit_code

def _data_dir() -> str:
    try:
        return str(load_settings().data_dir)
    except Exception:  # noqa: BLE001 - only for naming the folder in a message
        return "the data directory"


if __name__ == "__main__":
    sys.exit(main())
