"""Server rules: what each server's admins allow, and the one gate every job passes.

Admins (Discord's `/settings`) and operators (`artbot settings`) set keys per
server, some of them also per channel; `KEYS` lists them. A request is then
judged in two places, both here:

1. Before the request is built, `Policy.apply(settings)` gives the builders in
   `worker.jobs` the server's defaults and limits (default model, max steps,
   size and count), so a bad option gets the usual clear message.
2. `admit`, called by the queue inside the very transaction that inserts the
   job, checks everything again against the database as it is at that moment:
   the channel, the model and its family, the limits, the prompt blocklist, the
   user's queued jobs, the cooldown and the daily image quota. Every front door
   (slash commands, buttons, reactions, the CLI) queues through it, so no way
   round it exists, and fifty simultaneous requests cannot overspend a quota.

Quota is counted from the jobs table itself: the images of a user's queued,
running and succeeded jobs in the server since midnight UTC. A job that fails
or is canceled stops counting, which is the refund; a restart loses nothing.

Prompts are matched against the blocklist after `normalize`: NFKC (full-width
letters become ASCII), combining marks and invisible format characters
(zero-width spaces and joiners, soft hyphens) removed, and case folded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable

from artbot.config import Settings
from artbot.errors import InvalidRequest, UserError
from generators.bundled import family_of
from worker.jobs import model_choices

DAY = 86_400
# Families as admins name them; the bundled emoji-diffusion (pixel-diffusion) counts as diffusion.
FAMILIES = ("diffusion", "gan", "vae", "style")
DELETE_RULES = ("owner_or_mods", "mods", "anyone")
MAX_BLOCKLIST = 500
MAX_COOLDOWN = DAY


# -- refusals --------------------------------------------------------------------------


class PolicyRefusal(UserError):
    """A request the server's rules refuse.

    `key` names the rule (the bot translates it as `policy_<key>`), `values`
    fill its template, and `retry_at` (a Unix time), when set, says when the
    same request would be accepted: `{when}` in the template.
    """

    def __init__(self, key: str, template: str, *, retry_at: float | None = None, **values: Any):
        self.key, self.template, self.values, self.retry_at = key, template, values, retry_at
        super().__init__(self.render(_local_time(retry_at) if retry_at else ""))

    def render(self, when: str) -> str:
        return self.template.format(when=when, **self.values)


def _local_time(ts: float) -> str:
    """A time for the CLI: local time with its zone, e.g. '2026-11-22 00:00 UTC'."""
    return dt.datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M %Z")


def day_start(now: float) -> float:
    """The start of the quota day (midnight UTC) that `now` is in."""
    return now - now % DAY


# -- normalising prompts and the blocklist -------------------------------------------------

_DROP = {"Mn", "Me", "Cf"}  # combining marks, enclosing marks, invisible format characters


def normalize(text: str) -> str:
    """Text as the blocklist sees it: 'ＢＡＤ', 'b\u200bad', 'bád' and 'BAD' all become 'bad'."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) not in _DROP)
    return unicodedata.normalize("NFC", text.casefold())


def _unspaced(text: str) -> bool:
    """True for scripts written without spaces (Chinese, Japanese, Thai...), where a
    blocked word must match anywhere, not only as a whole word."""
    for c in text:
        name = unicodedata.name(c, "")
        if name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "THAI", "LAO", "KHMER")):
            return True
    return False


@dataclass(frozen=True)
class Blocklist:
    """Words (whole words; `word*` also blocks longer words starting with it) and
    regular expressions written `/like this/`, all matched case-insensitively on
    the normalized prompt."""

    entries: tuple[str, ...] = ()

    @staticmethod
    def compile_entry(entry: str) -> re.Pattern:
        if len(entry) >= 2 and entry.startswith("/") and entry.endswith("/"):
            return re.compile(entry[1:-1], re.IGNORECASE)
        word = normalize(entry.strip())
        stem = word.endswith("*")
        word = word.rstrip("*").strip()
        body = r"\s+".join(re.escape(part) for part in word.split())
        if _unspaced(word):
            return re.compile(body)
        return re.compile(rf"(?<!\w){body}" + (r"\w*" if stem else r"(?!\w)"))

    def match(self, prompt: str) -> str | None:
        """The entry that blocks `prompt`, or None."""
        if not self.entries or not prompt:
            return None
        text = normalize(prompt)
        for entry, pattern in _compiled(self.entries):
            if pattern.search(text):
                return entry
        return None


@functools.lru_cache(maxsize=64)
def _compiled(entries: tuple[str, ...]) -> list[tuple[str, re.Pattern]]:
    """A blocklist's patterns, compiled once per version of the list (every job is checked)."""
    return [(entry, Blocklist.compile_entry(entry)) for entry in entries]


# -- the keys --------------------------------------------------------------------------


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
    Key("max_steps", "most denoising steps per image", True),
    Key("max_size", "largest width or height in pixels", True),
    Key("max_count", "most images per request", True),
    Key("daily_quota", "images per member per day (UTC), or unlimited", False, "quota"),
    Key("max_queued", "most jobs a member may have waiting or running"),
    Key("cooldown", "wait between a member's requests, e.g. 30s or 2m", False, "seconds"),
    Key("role_quotas", "roles with their own daily quota: ROLE=N or ROLE=unlimited", False, "tiers"),
    Key("channels", "channels where the bot draws (empty: everywhere)", False, "channels"),
    Key("blocklist", "blocked prompt words, word* stems and /regular expressions/", False,
        "blocklist"),
    Key("spoiler", "post results as spoilers (on/off)", True, "bool"),
    Key("safety_checker", "run the model's safety checker; off is honoured only in "
        "age-restricted channels (on/off)", False, "bool"),
    Key("delete_by", "who may delete results: owner_or_mods, mods or anyone", False, "choice"),
]}


def defaults(settings: Settings) -> dict[str, Any]:
    """Each key's value where no server has set it: the operator's settings."""
    return {
        "default_model": settings.default_model, "allowed_models": [], "allowed_families": [],
        "max_steps": settings.max_steps, "max_size": settings.max_size,
        "max_count": settings.max_count, "daily_quota": "unlimited",
        "max_queued": settings.max_queued_per_user, "cooldown": 0, "role_quotas": {},
        "channels": [], "blocklist": [], "spoiler": False, "safety_checker": True,
        "delete_by": "owner_or_mods",
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
    if kind == "tiers":
        return _parse_tiers(text, current or {})
    # lists
    mode, body = "set", text
    if text[:1] in ("+", "-"):
        mode, body = ("add" if text[0] == "+" else "remove"), text[1:]
    if mode == "set" and body.lower() in _CLEAR:
        return []
    items = _items(body)
    if kind == "models":
        items = [_model_name(i, settings) for i in items]
    elif kind == "families":
        items = [i.lower() for i in items]
        bad = [i for i in items if i not in FAMILIES]
        if bad:
            raise InvalidRequest(f"Unknown family {bad[0]!r}; families: {', '.join(FAMILIES)}.")
    elif kind == "channels":
        items = [_snowflake(i, "channel") for i in items]
    elif kind == "blocklist":
        for item in items:
            if len(item) > 200:
                raise InvalidRequest("A blocklist entry can be at most 200 characters.")
            try:
                Blocklist.compile_entry(item)
            except re.error as exc:
                raise InvalidRequest(f"{item} is not a valid regular expression: {exc}.") from None
            if not normalize(item).strip("*/ "):
                raise InvalidRequest(f"Blocklist entry {item!r} is empty once normalized.")
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


def format_value(name: str, value: Any, *, mentions: bool = True) -> str:
    """A value as /settings (mentions: True) and `artbot settings show` print it."""
    kind = KEYS[name].kind
    if kind == "bool":
        return "on" if value else "off"
    if kind == "seconds":
        return f"{value}s" if value else "none"
    if kind == "channels":
        return ", ".join(f"<#{c}>" if mentions else c for c in value) if value else "everywhere"
    if kind == "tiers":
        return (", ".join(f"<@&{r}>={q}" if mentions else f"{r}={q}" for r, q in value.items())
                if value else "none")
    if isinstance(value, list):
        if kind == "blocklist":
            return ", ".join(value) if value else "none"
        return ", ".join(value) if value else "all"
    return str(value)


# -- who is asking -------------------------------------------------------------------------


@dataclass(frozen=True)
class Requester:
    """Who asks for a job, and from where: what the rules need to know."""

    user_id: str
    source: str  # 'discord' or 'cli'
    user_name: str | None = None
    server_id: str | None = None
    channel_id: str | None = None
    role_ids: tuple[str, ...] = ()
    channel_nsfw: bool = False  # an age-restricted channel


# -- the rules of one server (and channel) --------------------------------------------------


@dataclass
class Policy:
    server_id: str | None
    channel_id: str | None
    values: dict[str, Any]  # effective: defaults, then the server's, then the channel's
    server_values: dict[str, Any] = field(default_factory=dict)
    channel_values: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, store, settings: Settings, server_id: str | None,
             channel_id: str | None = None) -> "Policy":
        """`store` is a `storage.settings.SettingsStore`."""
        values = defaults(settings)
        server = store.values(server_id) if server_id else {}
        channel = store.values(server_id, channel_id) if server_id and channel_id else {}
        values.update(server)
        values.update({k: v for k, v in channel.items() if KEYS[k].per_channel})
        for k in ("max_steps", "max_size", "max_count"):  # the operator's limits always hold
            values[k] = min(values[k], getattr(settings, k))
        return cls(server_id, channel_id, values, server, channel)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def source(self, name: str) -> str:
        """Where a key's value comes from: 'channel', 'server' or 'default'."""
        if self.channel_id and KEYS[name].per_channel and name in self.channel_values:
            return "channel"
        return "server" if name in self.server_values else "default"

    def allows_model(self, model: str, settings: Settings) -> bool:
        allowed = self["allowed_models"]
        if allowed and model not in {settings.resolve_model(m) for m in allowed} | set(allowed):
            return False
        return self.allows_family(_family(family_of(model)))

    def allows_family(self, family: str) -> bool:
        allowed = self["allowed_families"]
        return not allowed or family in allowed

    def apply(self, settings: Settings) -> Settings:
        """The operator's settings with this server's defaults and limits in them,
        for the request builders."""
        default = self["default_model"]
        if not self.allows_model(settings.resolve_model(default), settings):
            default = next((m for m in model_choices(settings)
                            if self.allows_model(settings.resolve_model(m), settings)), default)
        return dataclasses.replace(
            settings, default_model=default, max_steps=self["max_steps"],
            max_size=self["max_size"], max_count=self["max_count"],
            max_queued_per_user=self["max_queued"])

    def daily_quota(self, role_ids=()) -> int | None:
        """Images per day for a member with these roles; None: unlimited."""
        quotas = [self["daily_quota"]]
        quotas += [q for r, q in self["role_quotas"].items() if r in {str(x) for x in role_ids}]
        if "unlimited" in quotas:
            return None
        return max(int(q) for q in quotas)

    def may_delete(self, *, is_owner: bool, is_mod: bool) -> bool:
        rule = self["delete_by"]
        if rule == "anyone":
            return True
        if rule == "mods":
            return is_mod
        return is_owner or is_mod

    def unfiltered(self, channel_nsfw: bool) -> bool:
        """Whether results may skip the model's safety checker here."""
        return not self["safety_checker"] and channel_nsfw

    # -- checks that need no counting --------------------------------------------

    def check(self, spec, requester: Requester, settings: Settings) -> None:
        """Refuse what this server does not allow (raises PolicyRefusal)."""
        channels = self["channels"]
        if channels and requester.channel_id and requester.channel_id not in channels:
            raise PolicyRefusal("channel", "I only draw in {channels} on this server.",
                                channels=", ".join(f"<#{c}>" for c in channels))
        family = _family(spec.generator)
        if not self.allows_family(family):
            raise PolicyRefusal("family", "{family} models are not allowed here.", family=family)
        if family != "style" and not self.allows_model(spec.model, settings):
            raise PolicyRefusal("model", "The model {model} is not allowed here; allowed: {allowed}.",
                                model=spec.model, allowed=", ".join(self["allowed_models"]) or "-")
        p = spec.params
        if family != "style" and p.get("steps", 0) > self["max_steps"]:
            raise PolicyRefusal("limit", "This server allows at most {limit} {what}.",
                                limit=self["max_steps"], what="steps")
        if max(p.get("width", 0), p.get("height", 0)) > self["max_size"]:
            raise PolicyRefusal("limit", "This server allows at most {limit} {what}.",
                                limit=self["max_size"], what="pixels per side")
        if len(spec.seeds) > self["max_count"]:
            raise PolicyRefusal("limit", "This server allows at most {limit} {what}.",
                                limit=self["max_count"], what="images per request")
        blocked = Blocklist(tuple(self["blocklist"])).match(p.get("prompt") or "")
        if blocked is not None:
            raise PolicyRefusal("blocked", "This server does not allow that prompt.")


def _family(generator: str) -> str:
    return "diffusion" if generator == "pixel-diffusion" else generator


# -- the gate ----------------------------------------------------------------------------------


def admit(store, spec, requester: Requester, settings: Settings, now: float) -> dict[str, Any]:
    """The one gate: run by the queue inside the transaction that inserts the job.

    `store` is the `storage.jobs.JobStore` of that transaction. Raises a
    UserError to refuse; returns parameters to add to the job (spoiler,
    safety checker).
    """
    policy = Policy.load(store.settings, settings, requester.server_id, requester.channel_id)
    policy.check(spec, requester, settings)
    store.check_pending(requester.user_id, policy["max_queued"])
    server = requester.server_id
    if server is not None:
        cooldown = policy["cooldown"]
        last = store.last_job_at(server, requester.user_id)
        if cooldown and last is not None and now < last + cooldown:
            raise PolicyRefusal("cooldown", "Slow down: you can ask again {when}.",
                                retry_at=last + cooldown)
        quota = policy.daily_quota(requester.role_ids)
        if quota is not None:
            used = store.images_since(server, requester.user_id, day_start(now))
            asked = len(spec.seeds)
            if used + asked > quota:
                left = max(0, quota - used)
                if left:
                    raise PolicyRefusal(
                        "quota_partial", "You have {left} of your {images} left today; "
                        "ask for {left} or fewer, or wait until the quota resets {when}.",
                        retry_at=day_start(now) + DAY, left=left, quota=quota, images=images(quota))
                raise PolicyRefusal("quota", "You have used your {images} for today; "
                                    "the quota resets {when}.", retry_at=day_start(now) + DAY,
                                    quota=quota, images=images(quota))
    extra: dict[str, Any] = {}
    if policy["spoiler"]:
        extra["spoiler"] = True
    if _family(spec.generator) == "diffusion" and policy.unfiltered(requester.channel_nsfw):
        extra["options"] = {**spec.params.get("options", {}), "safety_checker": False}
    return extra


def images(n: int) -> str:
    return f"{n} image" + ("" if n == 1 else "s")


def gate(spec, requester: Requester, settings: Settings,
         clock: Callable[[], float]) -> Callable[[Any], dict[str, Any]]:
    """`admit` bound to one request, as `JobStore.submit(admit=...)` wants it."""
    return lambda store: admit(store, spec, requester, settings, clock())


@dataclass
class QuotaStatus:
    quota: int | None  # None: unlimited
    used: int
    resets_at: float
    cooldown_until: float | None  # set while the member must wait
    pending: int
    max_queued: int

    @property
    def left(self) -> int | None:
        return None if self.quota is None else max(0, self.quota - self.used)


def quota_status(store, settings: Settings, requester: Requester, now: float) -> QuotaStatus:
    """What /quota tells a member."""
    policy = Policy.load(store.settings, settings, requester.server_id, requester.channel_id)
    last = store.last_job_at(requester.server_id, requester.user_id)
    cooldown_until = last + policy["cooldown"] if last is not None and policy["cooldown"] else None
    return QuotaStatus(
        quota=policy.daily_quota(requester.role_ids),
        used=store.images_since(requester.server_id, requester.user_id, day_start(now)),
        resets_at=day_start(now) + DAY,
        cooldown_until=cooldown_until if cooldown_until and cooldown_until > now else None,
        pending=store.pending_count(requester.user_id),
        max_queued=policy["max_queued"],
    )


def change_setting(store, settings: Settings, server_id: str, name: str, text: str | None, *,
                   actor: str, via: str, channel_id: str | None = None) -> tuple[Any, Any] | None:
    """Set a key from what was typed (None: back to the default), audited. Returns
    (old, new) or None when nothing changed. `store` is a SettingsStore."""
    key = key_of(name)
    if channel_id is not None and not key.per_channel:
        raise InvalidRequest(f"{key.name} is set for the whole server, not per channel.")
    if text is None:
        value = None
    else:
        current = store.values(server_id, channel_id).get(key.name)
        if current is None:
            current = Policy.load(store, settings, server_id, channel_id)[key.name]
        value = parse_value(key.name, text, settings, current)
    return store.set(server_id, key.name, value, actor=actor, via=via, channel_id=channel_id)
