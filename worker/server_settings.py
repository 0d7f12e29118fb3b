"""The keys a server's admins set, and their values: parsed from what was typed,
shown back as plain text.

`KEYS` lists every key with its help and whether a channel may override it;
`parse_value` turns what an admin typed (`/settings set`, `artbot settings
set`) into the stored JSON value, or raises `InvalidRequest` with a message
that says what would work; `format_value` shows a stored value as plain text
(the bot writes channels and roles as mentions itself).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from artbot.config import Settings
from artbot.errors import InvalidRequest
from worker.prompts import entry_problem
from worker.loras import available_loras
from worker.quota_day import DEFAULT_ZONE, parse_timezone
from worker.requests import model_choices

DAY = 86_400
# Families as admins name them; the bundled emoji-diffusion (pixel-diffusion) counts as diffusion.
FAMILIES = ("diffusion", "gan", "vae", "style")
DELETE_RULES = ("owner_or_mods", "mods", "anyone")
MAX_BLOCKLIST = 500
MAX_COOLDOWN = DAY
MAX_RETENTION_DAYS = 36_500


@dataclass(frozen=True)
class Key:
    name: str
    help: str
    per_channel: bool = False  # may a channel override it?
    kind: str = "int"


KEYS: dict[str, Key] = {k.name: k for k in [
    Key("default_model", "model used when a request names none", True, "model"),
    Key("allowed_models", "models members may use (empty: all)", True, "models"),
    Key("allowed_families", "generator families allowed: diffusion, gan, vae, style (empty: all)",
        True, "families"),
    Key("allowed_loras", "LoRAs members may use (empty: all in the operator's folder; "
        "none: no LoRAs)", True, "loras"),
    Key("max_steps", "most denoising steps per image", True),
    Key("max_size", "largest width or height in pixels", True),
    Key("max_count", "most images per request", True),
    Key("daily_quota", "fast images per member per day (midnight to midnight in the "
        "server's timezone), or unlimited; past it, "
        "relax time (see relax)", False, "quota"),
    Key("max_queued", "most jobs a member may have waiting or running"),
    Key("cooldown", "wait between a member's requests, e.g. 30s or 2m", False, "seconds"),
    Key("role_quotas", "roles with their own daily quota of fast images: ROLE=N or "
        "ROLE=unlimited", False, "tiers"),
    Key("relax", "past their daily quota (fast images), members' jobs wait in the relax queue, "
        "which runs when no fast job waits (on); off: they are refused", False, "bool"),
    Key("channels", "channels where the bot draws (empty: everywhere)", False, "channels"),
    Key("blocklist", "blocked prompt words, word* stems and /regular expressions/", False,
        "blocklist"),
    Key("spoiler", "post results as spoilers (on/off)", True, "bool"),
    Key("safety_checker", "run the model's safety checker; off is honoured only in "
        "age-restricted channels (on/off)", False, "bool"),
    Key("delete_by", "who may delete results: owner_or_mods, mods or anyone", False, "choice"),
    Key("timezone", "the time zone whose midnight starts the quota day: an IANA name such "
        "as Europe/Berlin (default UTC)", False, "timezone"),
    Key("retention", "delete results (jobs and their images) older than this many days, "
        "e.g. 30; 0 or off keeps them forever (default)", False, "days"),
]}


def defaults(settings: Settings) -> dict[str, Any]:
    """Each key's value where no server has set it: the operator's settings."""
    return {
        "default_model": settings.default_model, "allowed_models": [], "allowed_families": [],
        "allowed_loras": [],
        "max_steps": settings.max_steps, "max_size": settings.max_size,
        "max_count": settings.max_count, "daily_quota": "unlimited",
        "max_queued": settings.max_queued_per_user, "cooldown": 0, "role_quotas": {},
        "channels": [], "blocklist": [], "spoiler": False, "safety_checker": True,
        "delete_by": "owner_or_mods", "relax": True, "timezone": DEFAULT_ZONE,
        "retention": 0,
    }


def key_of(name: str) -> Key:
    key = KEYS.get(name.strip().lower().replace("-", "_"))
    if key is None:
        raise InvalidRequest(f"Unknown setting {name!r}; settings: {', '.join(KEYS)}.")
    return key


def _items(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("["):
        try:
            data = json.loads(text)
        except ValueError:
            raise InvalidRequest("That list is not valid JSON.") from None
        if not isinstance(data, list):
            raise InvalidRequest("Give a list: comma-separated, or JSON.")
        return [str(x).strip() for x in data if str(x).strip()]
    parts = re.split(r"[\n,]", text) if not (text.startswith("/") and text.endswith("/")) else [text]
    return [p.strip() for p in parts if p.strip()]


def _whole(text: str, name: str, low: int, high: int, *, unit: str = "") -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise InvalidRequest(f"{name} must be a whole number, not {text!r}.") from None
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}{unit}.")
    return value


def _quota(text: str) -> int | str:
    """A daily image quota: a whole number, or 'unlimited'."""
    if text.strip().lower() in ("unlimited", "none", "off", "-1"):
        return "unlimited"
    return _whole(text, "daily_quota", 0, 1_000_000)


def _days(text: str) -> int:
    """Days results are kept: '30', '30d' or '30 days'; 0, 'off' or 'forever' keeps them."""
    value = text.strip().lower()
    if value in ("off", "none", "never", "forever", "0"):
        return 0
    m = re.fullmatch(r"([0-9]{1,30})\s*(?:d|days?)?", value)
    if not m:
        raise InvalidRequest(f"retention is a number of days such as 30, or off, not {text!r}.")
    return _whole(m.group(1), "retention", 0, MAX_RETENTION_DAYS, unit=" days")


def parse_duration(text: str) -> int:
    """'90', '90s', '2m', '1h30m' -> seconds."""
    text = text.strip().lower().replace(" ", "")
    if text.isdigit():
        return int(text)
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?:in)?)?(?:(\d+)s)?", text)
    if not text or not m:
        raise InvalidRequest(f"Cooldown {text!r} is not a duration such as 30s, 2m or 1h.")
    h, mi, s = (int(g or 0) for g in m.groups())
    return h * 3600 + mi * 60 + s


def _snowflake(text: str, what: str) -> str:
    m = re.fullmatch(r"<(?:#|@&)?(\d{5,20})>|(\d{5,20})", text.strip())
    if not m:
        raise InvalidRequest(f"{text!r} is not a {what} (a mention or an id).")
    return m.group(1) or m.group(2)


def _model_name(text: str, settings: Settings) -> str:
    name = text.strip()
    known = model_choices(settings)
    if name not in known and settings.resolve_model(name) not in known:
        raise InvalidRequest(f"Unknown model {name!r}; models: {', '.join(known)}.")
    return name


# allowed_loras: members may use none at all.
NO_LORAS = "none"

_CLEAR = {"", "all", "any", "none", "everywhere", "[]"}


def parse_value(name: str, text: str, settings: Settings, current: Any = None) -> Any:
    """A setting's value from what an admin typed; InvalidRequest with a clear
    message if it cannot be used. For list settings, '+a, b' adds to `current`
    and '-a' removes from it; 'all' (or 'none' for the blocklist) empties it."""
    key = key_of(name)
    text = str(text).strip()
    kind = key.kind
    if kind == "int":
        limits = {"max_steps": (1, settings.max_steps), "max_size": (64, settings.max_size),
                  "max_count": (1, settings.max_count), "max_queued": (1, 1000)}[key.name]
        value = _whole(text, key.name, *limits,
                       unit=" (the operator's limit)" if key.name != "max_queued" else "")
        if key.name == "max_size" and value % 8:
            raise InvalidRequest(f"max_size must be a multiple of 8 (try {value // 8 * 8}).")
        return value
    if kind == "quota":
        return _quota(text)
    if kind == "seconds":
        seconds = parse_duration(text)
        if seconds > MAX_COOLDOWN:
            raise InvalidRequest("The cooldown can be at most 24 hours.")
        return seconds
    if kind == "bool":
        if text.lower() in ("on", "true", "yes", "1", "enabled"):
            return True
        if text.lower() in ("off", "false", "no", "0", "disabled"):
            return False
        raise InvalidRequest(f"{key.name} is on or off, not {text!r}.")
    if kind == "choice":
        value = text.lower()
        if value not in DELETE_RULES:
            raise InvalidRequest(f"delete_by is one of {', '.join(DELETE_RULES)}.")
        return value
    if kind == "model":
        return _model_name(text, settings)
    if kind == "timezone":
        return parse_timezone(text)
    if kind == "days":
        return _days(text)
    if kind == "tiers":
        return _parse_tiers(text, current or {})
    # lists
    mode, body = "set", text
    if text[:1] in ("+", "-"):
        mode, body = ("add" if text[0] == "+" else "remove"), text[1:]
    if kind == "loras" and mode == "set" and body.lower() == "none":
        return [NO_LORAS]
    if mode == "set" and body.lower() in _CLEAR:
        return []
    items = _items(body)
    if kind == "loras":
        known = available_loras(settings)
        bad = [i for i in items if i not in known]
        if bad:
            raise InvalidRequest(f"Unknown LoRA {bad[0]!r}; LoRAs: {', '.join(known) or 'none'} "
                                 f"(files in the operator's lora_dir).")
    if kind == "models":
        items = [_model_name(i, settings) for i in items]
    elif kind == "families":
        items = [i.lower() for i in items]
        bad = [i for i in items if i not in FAMILIES]
        if bad:
            raise InvalidRequest(f"Unknown family {bad[0]!r}; families: {', '.join(FAMILIES)}.")
    elif kind == "channels":
        items = [_snowflake(i, "channel") for i in items]
    elif kind == "blocklist" and mode != "remove":
        # Refused here, when it is set, rather than at every prompt: a regular expression
        # that does not compile, backtracks without end or matches every prompt.
        for item in items:
            problem = entry_problem(item)
            if problem:
                raise InvalidRequest(problem)
    old = list(current or [])
    if mode == "add":
        items = old + [i for i in items if i not in old]
    elif mode == "remove":
        items = [i for i in old if i not in items]
    items = list(dict.fromkeys(items))
    if kind == "blocklist" and len(items) > MAX_BLOCKLIST:
        raise InvalidRequest(f"The blocklist can hold at most {MAX_BLOCKLIST} entries.")
    return items


def _parse_tiers(text: str, current: dict) -> dict[str, Any]:
    """'ROLE=50, ROLE2=unlimited' replaces; '+ROLE=50' adds or changes one; '-ROLE' removes."""
    mode, body = "set", text
    if text[:1] in ("+", "-"):
        mode, body = ("add" if text[0] == "+" else "remove"), text[1:]
    if mode == "set" and body.strip().lower() in _CLEAR:
        return {}
    tiers = dict(current) if mode != "set" else {}
    for item in _items(body):
        if mode == "remove":
            tiers.pop(_snowflake(item.split("=")[0], "role"), None)
            continue
        role, sep, quota = item.partition("=")
        if not sep:
            raise InvalidRequest(f"Write a role quota as ROLE=N or ROLE=unlimited, not {item!r}.")
        tiers[_snowflake(role, "role")] = _quota(quota)
    return tiers


def format_value(name: str, value: Any) -> str:
    """A value as plain text, as `artbot settings show` prints it. (The bot shows
    channels and roles as mentions: `bot.admin.shown_value`.)"""
    kind = KEYS[name].kind
    if kind == "bool":
        return "on" if value else "off"
    if kind == "seconds":
        return f"{value}s" if value else "none"
    if kind == "days":
        return f"{value} day{'s' if value != 1 else ''}" if value else "off (kept forever)"
    if kind == "channels":
        return ", ".join(value) if value else "everywhere"
    if kind == "tiers":
        return ", ".join(f"{r}={q}" for r, q in value.items()) if value else "none"
    if isinstance(value, list):
        if kind == "blocklist":
            return ", ".join(value) if value else "none"
        return ", ".join(value) if value else "all"
    return str(value)
