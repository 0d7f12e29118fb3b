"""The rules of one server (and channel): `Policy`, and changing them.

Admins (Discord's `/settings`) and operators (`artbot settings`) set keys per
server, some of them also per channel (`worker.server_settings.KEYS`). A
`Policy` is those values as they stand: the operator's defaults, then the
server's, then the channel's, with the operator's limits always on top.

Before a request is built, `Policy.apply(settings)` gives the builders in
`worker.requests` the server's defaults and limits (default model, max steps,
size and count), so a bad option gets the usual clear message. `Policy.check`
refuses what the server does not allow; the gate (`worker.gate.admit`) runs it
again inside the transaction that queues the job.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from artbot.config import Settings
from artbot.errors import InvalidRequest, Refusal
from generators.bundled import family_of
from storage.settings import SettingsStore
from worker.prompts import CHECK_TIME_S, Blocklist, Unchecked
from worker.requests import TOOL_FAMILIES, model_choices
from worker.server_settings import KEYS, NO_LORAS, defaults, key_of, parse_value

log = logging.getLogger(__name__)


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
    def load(cls, store: SettingsStore, settings: Settings, server_id: str | None,
             channel_id: str | None = None) -> "Policy":
        """The rules as stored now for a server (None: no server, the operator's) and channel."""
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
        return self.allows_family(family_group(family_of(model)))

    def allows_lora(self, name: str) -> bool:
        allowed = self["allowed_loras"]
        return not allowed or name in allowed

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
        """Fast images per day for a member with these roles (the best of the server's
        `daily_quota` and their roles' tiers); None: unlimited. Past it, jobs run in
        relax time where the server's `relax` is on (`worker.gate.admit`)."""
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
        """Refuse what this server does not allow (raises Refusal)."""
        channels = self["channels"]
        if channels and requester.channel_id and requester.channel_id not in channels:
            raise Refusal("channel", "I only draw in channels {channels} on this server.",
                          channels=", ".join(channels), channel_ids=tuple(channels))
        family = family_group(spec.family)
        tool = spec.family in TOOL_FAMILIES  # an upscaler or describer acts on a result
        if not tool and not self.allows_family(family):
            raise Refusal("family", "{family} models are not allowed here.", family=family)
        if family != "style" and not tool and not self.allows_model(spec.model, settings):
            raise Refusal("model", "The model {model} is not allowed here; allowed: {allowed}.",
                                model=spec.model, allowed=", ".join(self["allowed_models"]) or "-")
        p = spec.params
        for lora in p.get("loras", []):
            if not self.allows_lora(lora["name"]):
                allowed = [x for x in self["allowed_loras"] if x != NO_LORAS]
                raise Refusal("lora", "The LoRA {lora} is not allowed here; allowed: {allowed}.",
                              lora=lora["name"], allowed=", ".join(allowed) or "none")
        if family != "style" and p.get("steps", 0) > self["max_steps"]:
            raise Refusal("limit", "This server allows at most {limit} {what}.",
                                limit=self["max_steps"], what="steps")
        # An upscale may go past the largest size drawn (worker.requests.MAX_UPSCALED_SIDE).
        if spec.kind != "upscale" and max(p.get("width", 0), p.get("height", 0)) > self["max_size"]:
            raise Refusal("limit", "This server allows at most {limit} {what}.",
                                limit=self["max_size"], what="pixels per side")
        if len(spec.seeds) > self["max_count"]:
            raise Refusal("limit", "This server allows at most {limit} {what}.",
                                limit=self["max_count"], what="images per request")
        try:
            blocked = Blocklist(tuple(self["blocklist"])).match(p.get("prompt") or "")
        except Unchecked as exc:
            # Refused, not let through: a prompt the rules could not read is not allowed.
            log.warning("server %s: blocklist entry %s took over %g s on a %d-character "
                        "prompt, which was refused as unchecked; an admin should simplify "
                        "that entry", self.server_id, exc.entry, CHECK_TIME_S,
                        len(p.get("prompt") or ""))
            raise Refusal("unchecked", "This prompt could not be checked against the server's "
                          "blocklist in time; try a shorter prompt.") from None
        if blocked is not None:
            raise Refusal("blocked", "This server does not allow that prompt.")


def family_group(family: str) -> str:
    """The family as admins name it: the bundled pixel-space diffusion counts as diffusion."""
    return "diffusion" if family == "pixel-diffusion" else family


def change_setting(store: SettingsStore, settings: Settings, server_id: str, name: str,
                   text: str | None, *, actor: str, via: str, channel_id: str | None = None) -> tuple[Any, Any] | None:
    """Set a key from what was typed (None: back to the default), audited. Returns
    (old, new) or None when nothing changed."""
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
