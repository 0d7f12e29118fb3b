"""One settings object, read from an optional TOML file and the environment.

Precedence, lowest first: the defaults below, the TOML file, then environment
variables prefixed ``ARTBOT_``. The file is ``$ARTBOT_CONFIG`` if set, else
``./artbot.toml`` if it exists. Secrets (the Discord token) come from the
environment only; a TOML file that holds one is refused so that it cannot be
committed or shared by accident.

Example ``artbot.toml``::

    data_dir = "/var/lib/artbot"
    default_model = "/models/sd15"
    device = "cuda"
    max_queued_per_user = 5

    [models]                       # short names usable as --model / model:
    sd15 = "/models/sd15"
    dreamshaper = "Lykon/dreamshaper-8"

    [models.juggernaut]            # the model catalogue: a name with its own defaults
    source = "/models/juggernautXL_v9.safetensors"
    config = "/models/sdxl-config" # single files: a diffusers folder with the configs
    description = "Juggernaut XL: photographs and film stills"
    sampler = "DPM++ 2M Karras"
    guidance = 6.0
    loras = ["film-grain", "detail"]   # the LoRAs allowed with it (all when left out)
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from artbot.errors import UserError

ENV_PREFIX = "ARTBOT_"
# The bundled small model: draws offline, on the CPU, with no download.
DEFAULT_MODEL = "emoji-diffusion"


class ConfigError(UserError):
    """A setting has a value that cannot be used."""


@dataclass
class ModelEntry:
    """One model of the catalogue (`[models.NAME]` in artbot.toml): where it comes
    from and what differs from its architecture's defaults."""

    # A diffusers folder, a single .safetensors/.ckpt file, or a hub id.
    source: str
    # Shown in `artbot models` and in Discord's model autocomplete.
    description: str = ""
    # The architecture, when detection from the files gets it wrong ("sdxl", "sd2-v", ...).
    arch: str | None = None
    # A few-step model (Turbo, Lightning, LCM) its name and config do not reveal.
    distilled: bool | None = None
    # Single files: a local diffusers folder holding the configurations (no weights needed).
    config: str | None = None
    # Defaults of requests that do not say otherwise.
    size: str | None = None
    steps: int | None = None
    guidance: float | None = None
    sampler: str | None = None
    # Skip the last N layers of the CLIP text encoder (Pony and anime models want 2).
    clip_skip: int | None = None
    # LoRA names (files in lora_dir, without the suffix) allowed with this model; None: all.
    loras: list[str] | None = None
    # An AutoencoderTiny folder (TAESD, TAESDXL, TAESD3, TAEF1) that draws this model's
    # previews of the image forming; None: a cheap linear approximation, no download.
    preview_vae: str | None = None
    # Speed switches, applied once at load where the model and device have them (else
    # skipped with the reason logged; generators/diffusion/speed.py): torch.compile of
    # the denoiser, warmed up at load (refused while exact_batches is on); NHWC weights
    # for the UNet and VAE; one matrix product for attention's q, k, v (no LoRAs then:
    # it needs loras = []).
    compile: bool = False
    channels_last: bool = False
    fuse_projections: bool = False

    FIELDS = ("source", "description", "arch", "distilled", "config", "size", "steps",
              "guidance", "sampler", "clip_skip", "loras", "preview_vae", "compile",
              "channels_last", "fuse_projections")

    def speed_switches(self, exact_batches: bool) -> dict[str, bool] | None:
        """The switches turned on, as `DiffusionGenerator.load(speed=...)` takes them
        (with the worker's exact_batches, which compile needs to know); None: none."""
        on = {k: True for k in ("compile", "channels_last", "fuse_projections") if getattr(self, k)}
        return {**on, "exact_batches": exact_batches} if on else None


def _model_entry(name: str, raw: Any) -> ModelEntry:
    """`name = "ref"` or a `[models.name]` table -> ModelEntry, checking every field."""
    if isinstance(raw, str):
        return ModelEntry(source=raw)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"models.{name}: give a model reference or a table with source = ...")
    unknown = sorted(set(raw) - set(ModelEntry.FIELDS))
    if unknown:
        raise ConfigError(f"models.{name}: unknown key {unknown[0]!r}; keys: "
                          f"{', '.join(ModelEntry.FIELDS)}")
    if not isinstance(raw.get("source"), str) or not raw["source"].strip():
        raise ConfigError(f"models.{name}: source = \"...\" (a folder, file or hub id) is missing")
    kinds = {"description": str, "arch": str, "config": str, "size": str, "sampler": str,
             "distilled": bool, "steps": int, "guidance": (int, float), "clip_skip": int,
             "loras": list, "preview_vae": str, "compile": bool, "channels_last": bool,
             "fuse_projections": bool}
    for key, kind in kinds.items():
        value = raw.get(key)
        if value is not None and (not isinstance(value, kind) or
                                  (kind is int and isinstance(value, bool))):
            raise ConfigError(f"models.{name}.{key}: {value!r} is not a valid value")
    if raw.get("clip_skip") is not None and not 1 <= raw["clip_skip"] <= 12:
        raise ConfigError(f"models.{name}.clip_skip: 1 (no skip) to 12, as A1111 counts it")
    loras = raw.get("loras")
    if loras is not None and not all(isinstance(x, str) for x in loras):
        raise ConfigError(f"models.{name}.loras: a list of LoRA names, as strings")
    if raw.get("fuse_projections") and loras != []:
        raise ConfigError(f"models.{name}.fuse_projections: fused attention leaves LoRAs out, "
                          f"so it needs loras = [] (no LoRAs with this model)")
    values = dict(raw)
    if "guidance" in values:
        values["guidance"] = float(values["guidance"])
    return ModelEntry(**values)


@dataclass
class Settings:
    # Where the SQLite database and the image store live.
    data_dir: Path = Path("./artbot-data")
    # Model used when a request names none: a hub id, a folder, a .safetensors
    # file, or a key of `models`.
    default_model: str = DEFAULT_MODEL
    # "auto" picks cuda, then mps, then cpu. Any torch device string works.
    device: str = "auto"
    # "auto" picks float16 on CUDA and float32 elsewhere; or float16/bfloat16/float32.
    dtype: str = "auto"
    # The model catalogue: short names -> where each model comes from and its
    # own defaults (`name = "ref"` or a `[models.name]` table; see ModelEntry).
    models: dict[str, ModelEntry] = field(default_factory=dict)
    # A folder of LoRA files (.safetensors); `<lora:NAME:0.8>` names one by its file name.
    lora_dir: Path | None = None
    # A user may have at most this many jobs queued or running at once.
    max_queued_per_user: int = 10
    # A job running longer than this is stopped and failed (seconds).
    job_timeout_s: float = 600.0
    # A job whose worker died this many times is failed instead of retried.
    max_attempts: int = 3
    # A running job whose worker has not been heard from for this long is
    # considered abandoned and queued again (seconds).
    lease_s: float = 120.0
    # Loaded models stay in memory while their weights fit this many GB, least
    # recently used out first; 0: 90% of the GPU's memory on CUDA, half the RAM on
    # a CPU. max_loaded_models caps their number as well.
    model_memory_gb: float = 0.0
    max_loaded_models: int = 8
    # A diffusers model that runs out of GPU memory even one image at a time may be
    # offloaded to the CPU between its parts (slower, but it draws).
    allow_cpu_offload: bool = False
    # Queued jobs that could share one generator call (same model, task, size, steps,
    # sampler, guidance, LoRAs) run together, up to this many images a call, taken
    # in the fair order. 1 runs one job at a time. The worker lowers it for itself
    # when the device runs out of memory.
    max_batch_images: int = 8
    # Every image of a batched call comes out byte-identical to the same job run
    # alone: layers whose arithmetic depends on the batch size (matrix products,
    # convolutions, the VAE decode) run one image at a time inside the call. Off,
    # a GPU fuses the whole batch (faster; images then differ from a lone run in
    # their last bits).
    exact_batches: bool = True
    # Size and steps used when a request gives none.
    default_size: str = "512x512"
    default_steps: int = 30
    # Largest width or height accepted, in pixels (SDXL's widest bucket is 1344).
    max_size: int = 1536
    # Most denoising steps accepted.
    max_steps: int = 150
    # Most images one job may make.
    max_count: int = 4
    # Style transfer: VGG-19 ImageNet weights (torchvision's file) and an AdaIN
    # decoder. Without VGG weights (and no network to fetch them once), gatys runs
    # on random weights and says so; adain refuses.
    vgg19_weights: str | None = None
    adain_decoder: str | None = None
    # Largest side of a style-transfer result, in pixels.
    max_style_size: int = 512
    # Upscale buttons and `artbot upscale`: a super-resolution network file (ESRGAN,
    # Real-ESRGAN, SwinIR... any .pth/.safetensors spandrel reads). Without one,
    # diffusers results are upscaled by a "hires fix" with their own model, and the
    # results of artbot's own models cannot be upscaled.
    upscaler: str | None = None
    # /describe: a transformers image-to-text model (a hub id or a folder), for example
    # Salesforce/blip-image-captioning-base. Without one, the bundled emoji classifier
    # describes images by its labels and their colours.
    captioner: str | None = None
    # Discord connection. The token is a secret: environment only.
    discord_token: str | None = field(default=None, repr=False)
    discord_api_base: str | None = None
    discord_gateway: str | None = None
    discord_dev_guild: int | None = None
    # Remote GPU workers (worker.remote, worker.dispatcher): the Redis server that the
    # bot's dispatcher and `artbot worker --connect` meet at (redis:// or rediss:// for
    # TLS). Empty: no remote workers. A password belongs in redis_password, not here.
    redis_url: str | None = None
    redis_password: str | None = field(default=None, repr=False)
    # `artbot run` also runs a worker on this machine's device; false on a bot machine
    # whose GPUs are elsewhere.
    local_worker: bool = True
    # An HTTP port with /healthz and Prometheus /metrics in `artbot run` and in each
    # worker; 0: none. It listens on metrics_host (0.0.0.0 to be scraped from elsewhere).
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    # Content Credentials: every PNG a worker makes is also signed with a C2PA manifest
    # (worker.provenance; needs the c2pa-python package): a PEM certificate chain, the
    # signing certificate first and issued by a CA, and its unencrypted PEM private key.
    # Unset: no C2PA; the XMP that says the image is AI-made is written either way.
    c2pa_cert: str | None = None
    c2pa_key: str | None = None

    SECRET_FIELDS = ("discord_token", "redis_password")

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser()
        if self.lora_dir is not None:
            self.lora_dir = Path(self.lora_dir).expanduser()
        self.models = {name: entry if isinstance(entry, ModelEntry) else _model_entry(name, entry)
                       for name, entry in self.models.items()}

    @property
    def db_path(self) -> Path:
        return self.data_dir / "artbot.db"

    @property
    def image_dir(self) -> Path:
        return self.data_dir / "images"

    def resolve_model(self, name: str | None) -> str:
        """The model reference a request means: an alias expanded, or the default."""
        name = (name or "").strip() or self.default_model
        entry = self.models.get(name)
        return entry.source if entry else name

    def model_entry(self, model: str | None) -> ModelEntry | None:
        """The catalogue entry of a model, by its name or by where it comes from."""
        name = (model or "").strip() or self.default_model
        if name in self.models:
            return self.models[name]
        return next((e for e in self.models.values() if e.source == name), None)

    def model_name(self, ref: str) -> str:
        """The catalogue name of a model reference, or the reference itself."""
        return next((n for n, e in self.models.items() if e.source == ref), ref)

    def safe_dict(self) -> dict[str, Any]:
        """The settings with secrets masked, for logs and `artbot config`."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in self.SECRET_FIELDS:
                value = "set" if value else "not set"
            elif isinstance(value, Path):
                value = str(value)
            elif f.name == "redis_url" and value:
                value = masked_url(value)
            elif f.name == "models":
                value = {n: dataclasses.asdict(e) for n, e in value.items()}
            out[f.name] = value
        return out


def masked_url(url: str) -> str:
    """A connection URL fit for a log: any password in it replaced by ***."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unreadable URL)"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


# Environment variable -> settings field, for names that are not simply the
# field name upper-cased.
_ENV_ALIASES = {
    "DISCORD_TOKEN": "discord_token",
    "ARTBOT_DISCORD_GATEWAY": "discord_gateway",
    "ARTBOT_DEV_GUILD": "discord_dev_guild",
}


def _coerce(name: str, raw: Any, target: Any) -> Any:
    """Turn a TOML or environment value into the type of the field's default."""
    try:
        if name == "discord_dev_guild":
            return None if raw in (None, "") else int(raw)
        if isinstance(target, Path) or name in ("data_dir", "lora_dir"):
            return None if raw in (None, "") else Path(raw).expanduser()
        if name == "models":
            if not isinstance(raw, Mapping):
                raise ValueError("expected a table")
            return {str(k): _model_entry(str(k), v) for k, v in raw.items()}
        if isinstance(target, bool):
            if isinstance(raw, bool):
                return raw
            return str(raw).strip().lower() in ("1", "true", "yes", "on")
        if isinstance(target, int):
            return int(raw)
        if isinstance(target, float):
            return float(raw)
        if isinstance(target, dict):
            if not isinstance(raw, Mapping):
                raise ValueError("expected a table")
            return {str(k): str(v) for k, v in raw.items()}
        return None if raw is None else str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: cannot use {raw!r} ({exc})") from None


def load_settings(
    environ: Mapping[str, str] | None = None, config_file: str | os.PathLike | None = None
) -> Settings:
    """Read the settings from the TOML file and the environment."""
    env = os.environ if environ is None else environ
    defaults = Settings()
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(Settings)}

    path = config_file or env.get("ARTBOT_CONFIG")
    if path is None and Path("artbot.toml").is_file():
        path = "artbot.toml"
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for key, raw in data.items():
            if key in Settings.SECRET_FIELDS:
                raise ConfigError(
                    f"config file {path} holds {key}; secrets come from the environment only "
                    f"(set {'DISCORD_TOKEN' if key == 'discord_token' else 'ARTBOT_' + key.upper()} "
                    f"instead)"
                )
            if key == "redis_url" and isinstance(raw, str) and masked_url(raw) != raw:
                raise ConfigError(
                    f"config file {path}: redis_url holds a password; secrets come from the "
                    f"environment only (set ARTBOT_REDIS_PASSWORD, or ARTBOT_REDIS_URL)"
                )
            if key not in names or key == "SECRET_FIELDS":
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(key, raw, getattr(defaults, key))

    for var, raw in env.items():
        if var in _ENV_ALIASES:
            key = _ENV_ALIASES[var]
        elif var.startswith(ENV_PREFIX):
            key = var[len(ENV_PREFIX):].lower()
            if key in ("config",) or key not in names:
                continue
        else:
            continue
        if key == "models":
            continue  # a table; only the TOML file can hold it
        values[key] = _coerce(key, raw, getattr(defaults, key))

    return Settings(**values)
