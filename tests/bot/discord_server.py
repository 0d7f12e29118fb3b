"""A small, strict fake of Discord (REST API v10 + gateway) for offline tests.

The real, unmodified discord.py client talks to this server over HTTP and a websocket
on 127.0.0.1.  It emulates what a slash-command bot touches:

* REST under ``/api/v10``: login (``/users/@me``, ``/oauth2/applications/@me``), command
  sync (bulk overwrite, global and per guild), interaction callbacks, webhook followups and
  ``@original`` edits, channel messages, reactions, a few guild/channel/user reads.
  Attachments the bot uploads are kept and served back under ``/attachments/...``, like
  Discord's CDN, so ``Attachment.read()`` works.
* The gateway at ``/gateway``: HELLO, heartbeat ACKs, IDENTIFY -> READY + GUILD_CREATE,
  RESUME with replay, RECONNECT and INVALID_SESSION, ``zlib-stream`` compression,
  GUILD_MEMBERS requests, intents (events the bot did not ask for are not sent).
* Discord's rules: acknowledgement within 3 s (10062), only once (40060), followups only
  after the acknowledgement (10015), tokens expire after 15 minutes (10015), bot-token
  authorization (401), permissions for channel sends, 429s on demand.
* Every request body is checked against Discord's own OpenAPI description (vendored in
  ``tests/bot/discord-api/openapi.json``) and so are the bodies this fake answers with.  A
  violation gets Discord's 400 answer and lands in ``server.protocol_errors``; call
  ``server.assert_clean()`` at the end of a test.

Tests act as Discord users through plain async methods (``slash_command``,
``press_button``, ``select``, ``submit_modal``, ``autocomplete``, ``add_reaction``,
``send_message``) and inspect what the bot did through ``FakeInteraction`` and
``StoredMessage`` records.  State (messages, commands, files) lives as long as the server,
so a bot can be restarted against the same server.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import functools
import hashlib
import itertools
import json
import math
import mimetypes
import os
import re
import secrets
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable, Optional
from urllib.parse import unquote

from aiohttp import web

__all__ = ["DiscordServer", "FakeInteraction", "StoredMessage", "User", "Member", "Role", "Channel",
           "DMChannel", "Guild", "Permissions", "Intents", "redirect_discord", "running_client"]

DISCORD_EPOCH_MS = 1420070400000
EPHEMERAL, LOADING, SUPPRESS_EMBEDS, COMPONENTS_V2 = 1 << 6, 1 << 7, 1 << 2, 1 << 15


class Permissions:
    """Permission bits used by the fake (Discord's values)."""
    ADD_REACTIONS, ADMINISTRATOR, MANAGE_GUILD = 1 << 6, 1 << 3, 1 << 5
    VIEW_CHANNEL, SEND_MESSAGES, MANAGE_MESSAGES = 1 << 10, 1 << 11, 1 << 13
    EMBED_LINKS, ATTACH_FILES, READ_MESSAGE_HISTORY = 1 << 14, 1 << 15, 1 << 16
    USE_EXTERNAL_EMOJIS, USE_APPLICATION_COMMANDS = 1 << 18, 1 << 31
    ALL = (1 << 51) - 1
    EVERYONE = (VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES | READ_MESSAGE_HISTORY
                | ADD_REACTIONS | USE_EXTERNAL_EMOJIS | USE_APPLICATION_COMMANDS)


class Intents:
    GUILDS, GUILD_MEMBERS, GUILD_PRESENCES = 1 << 0, 1 << 1, 1 << 8
    GUILD_MESSAGES, GUILD_MESSAGE_REACTIONS, MESSAGE_CONTENT = 1 << 9, 1 << 10, 1 << 15
    DIRECT_MESSAGES = 1 << 12
    PRIVILEGED = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat()


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _truthy(value: Optional[str]) -> bool:
    return (value or "").lower() in ("1", "true")


def _image_size(data: bytes) -> Optional[tuple[int, int]]:
    """Width and height of a PNG, GIF or JPEG, like Discord reports for image attachments."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:4] == b"GIF8" and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data) and data[i] == 0xFF:
            marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2):
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return w, h
            i += 2 + length
    return None


# --------------------------------------------------------------------------- OpenAPI checks

_DOC_URI = "urn:discord-openapi"


def _find_openapi() -> Path:
    """The vendored copy in ``tests/bot/discord-api/`` (see its README.md).

    ``$ARTBOT_DISCORD_OPENAPI`` names another copy, for example a newer one under test;
    nothing outside the repository is read otherwise.
    """
    override = os.environ.get("ARTBOT_DISCORD_OPENAPI")
    if override:
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"ARTBOT_DISCORD_OPENAPI={override!r} is not a file")
        return path
    path = Path(__file__).resolve().parent / "discord-api" / "openapi.json"
    if not path.is_file():
        raise FileNotFoundError(f"Discord's openapi.json is missing from the repository: {path}")
    return path


class OpenAPI:
    """Discord's OpenAPI v10 description, with ``$ref`` s made absolute, as a validator.

    Two relaxations mirror what Discord's API accepts and discord.py sends: snowflakes may
    be JSON integers (attachment ids ``0..9`` in upload payloads) and permission bitfields
    (``default_member_permissions``: integers without a format, above 2**53) may be decimal
    strings.
    """

    def __init__(self, path: Path):
        import jsonschema  # test dependency
        import referencing
        import referencing.jsonschema

        self.doc = doc = json.loads(path.read_text(encoding="utf-8"))
        schemas = doc["components"]["schemas"]
        schemas["SnowflakeType"] = {"anyOf": [schemas["SnowflakeType"], {"type": "integer", "minimum": 0}]}

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str) and ref.startswith("#/"):
                    node["$ref"] = _DOC_URI + ref
                types = node.get("type")
                types = types if isinstance(types, list) else [types]
                if "integer" in types and "format" not in node and node.get("maximum", 0) > 2 ** 53:
                    node["type"], node["pattern"] = [t for t in types if t] + ["string"], "^[0-9]+$"
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(doc)
        resource = referencing.Resource(contents=doc, specification=referencing.jsonschema.DRAFT202012)
        self._registry = referencing.Registry().with_resource(_DOC_URI, resource)
        self._jsonschema = jsonschema
        self._validators: dict[int, Any] = {}

    def operation(self, path: str, method: str) -> dict:
        return self.doc["paths"][path][method.lower()]

    def request_schema(self, path: str, method: str) -> Optional[dict]:
        body = self.operation(path, method).get("requestBody")
        return body and body["content"]["application/json"]["schema"]

    def response_schema(self, path: str, method: str, status: int) -> Optional[dict]:
        resp = self.operation(path, method)["responses"].get(str(status), {})
        return resp.get("content", {}).get("application/json", {}).get("schema")

    def schema(self, name: str) -> dict:
        return {"$ref": f"{_DOC_URI}#/components/schemas/{name}"}

    def errors(self, schema: dict, instance: Any) -> list[str]:
        """Violations of ``schema`` by ``instance`` ([] when valid), most relevant first."""
        v = self._validators.get(id(schema))
        if v is None:
            v = self._validators[id(schema)] = self._jsonschema.Draft202012Validator(schema, registry=self._registry)
        errs = list(v.iter_errors(instance))
        if not errs:
            return []
        best = self._explain(self._jsonschema.exceptions.best_match(errs))
        ordered = [best] + [e for e in errs if e is not best]
        return [f"{'/'.join(map(str, e.absolute_path)) or '<body>'}: {e.message[:300]}" for e in ordered]

    def _explain(self, err: Any) -> Any:
        """For a failed oneOf/anyOf, descend into the branch whose ``type`` discriminator
        matched (Discord's unions are tagged), so the message names the real problem."""
        while err.context:
            branches: dict[Any, list] = {}
            for e in err.context:
                branches.setdefault(e.relative_schema_path[0], []).append(e)
            tagged = [errs for errs in branches.values() if not any(
                (e.validator in ("enum", "const") and list(e.relative_path) == ["type"])
                or (e.validator == "type" and not e.relative_path) for e in errs)]
            if len(tagged) != 1:
                return err
            err = max(tagged[0], key=self._jsonschema.exceptions.relevance)
        return err


@functools.lru_cache(maxsize=2)
def _openapi(path: Path) -> OpenAPI:
    return OpenAPI(path)


# --------------------------------------------------------------------------- world model

@dataclass(eq=False)
class User:
    id: int
    username: str
    bot: bool = False

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def payload(self) -> dict:
        data = {"id": str(self.id), "username": self.username, "discriminator": "0", "global_name": None,
                "avatar": None, "avatar_decoration_data": None, "banner": None, "accent_color": None,
                "public_flags": 0, "flags": 0, "primary_guild": None, "collectibles": None}
        if self.bot:
            data["bot"] = True
        return data


@dataclass(eq=False)
class Role:
    id: int
    name: str
    permissions: int
    position: int = 0
    managed: bool = False

    @property
    def mention(self) -> str:
        return f"<@&{self.id}>"

    def payload(self) -> dict:
        return {"id": str(self.id), "name": self.name, "permissions": str(self.permissions),
                "position": self.position, "color": 0, "hoist": False, "managed": self.managed,
                "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
                "mentionable": False, "icon": None, "unicode_emoji": None, "flags": 0, "description": None}


@dataclass(eq=False)
class Channel:
    id: int
    guild_id: int
    name: str
    position: int
    type: int = 0
    topic: Optional[str] = None
    nsfw: bool = False  # age-restricted

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"

    def payload(self) -> dict:
        return {"id": str(self.id), "type": self.type, "guild_id": str(self.guild_id), "name": self.name,
                "position": self.position, "flags": 0, "parent_id": None, "topic": self.topic, "nsfw": self.nsfw,
                "rate_limit_per_user": 0, "last_message_id": None, "permission_overwrites": []}


@dataclass(eq=False)
class DMChannel:
    """A private channel between the bot and one user (type 1): no guild, no permissions."""
    id: int
    recipient: User
    guild_id: None = None
    type: int = 1

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"

    def payload(self) -> dict:
        return {"id": str(self.id), "type": 1, "last_message_id": None, "flags": 0,
                "recipients": [self.recipient.payload()]}


@dataclass(eq=False)
class Member:
    user: User
    guild: "Guild"
    roles: list[int]
    joined_at: str
    nick: Optional[str] = None

    @property
    def id(self) -> int:
        return self.user.id

    @property
    def mention(self) -> str:
        return self.user.mention

    @property
    def permissions(self) -> int:
        return self.guild.permissions_of(self.user.id)

    def payload(self, *, with_user: bool = True) -> dict:
        data = {"roles": [str(r) for r in self.roles], "joined_at": self.joined_at, "nick": self.nick,
                "avatar": None, "banner": None, "communication_disabled_until": None, "flags": 0,
                "pending": False, "premium_since": None, "mute": False, "deaf": False}
        if with_user:
            data["user"] = self.user.payload()
        return data


@dataclass(eq=False)
class Guild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, Role] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)
    locale: str = "en-US"

    def channel(self, name: str) -> Channel:
        return next(c for c in self.channels.values() if c.name == name)

    def member(self, name: str) -> Member:
        return next(m for m in self.members.values() if m.user.username == name)

    def permissions_of(self, user_id: int) -> int:
        if user_id == self.owner_id:
            return Permissions.ALL
        perms = self.roles[self.id].permissions
        for rid in self.members[user_id].roles:
            perms |= self.roles[rid].permissions
        return Permissions.ALL if perms & Permissions.ADMINISTRATOR else perms

    def payload(self, *, members: Iterable[Member], joined_at: str) -> dict:
        members = list(members)
        first_channel = min(self.channels.values(), key=lambda c: c.position, default=None)
        return {
            "id": str(self.id), "name": self.name, "icon": None, "splash": None, "discovery_splash": None,
            "banner": None, "description": None, "owner_id": str(self.owner_id), "afk_channel_id": None,
            "afk_timeout": 300, "widget_enabled": False, "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0,
            "features": [], "emojis": [], "stickers": [], "application_id": None,
            "system_channel_id": first_channel and str(first_channel.id), "system_channel_flags": 0,
            "rules_channel_id": None, "public_updates_channel_id": None, "safety_alerts_channel_id": None,
            "max_members": 500000, "max_video_channel_users": 25, "max_stage_video_channel_users": 50,
            "vanity_url_code": None, "premium_tier": 0, "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False, "preferred_locale": self.locale, "incidents_data": None,
            "roles": [r.payload() for r in self.roles.values()],
            "channels": [c.payload() for c in self.channels.values()],
            "members": [m.payload() for m in members], "member_count": len(self.members),
            "joined_at": joined_at, "large": False, "unavailable": False, "lazy": True, "threads": [],
            "presences": [], "voice_states": [], "stage_instances": [], "guild_scheduled_events": [],
            "soundboard_sounds": [], "embedded_activities": [], "activity_instances": [],
        }


@dataclass
class StoredFile:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Edit:
    at: float  # event-loop time of the edit
    payload: dict  # the message as it was after this edit


@dataclass(eq=False)
class StoredMessage:
    """A message as Discord holds it: ``payload`` is the complete message object."""
    payload: dict
    files: dict[str, StoredFile] = field(default_factory=dict)  # attachment id -> bytes
    interaction_id: Optional[int] = None
    created_at: float = 0.0  # event-loop time
    edits: list[Edit] = field(default_factory=list)
    reactions: dict[str, list[int]] = field(default_factory=dict)  # emoji key -> user ids
    deleted: bool = False

    id = property(lambda self: int(self.payload["id"]))
    channel_id = property(lambda self: int(self.payload["channel_id"]))
    author_id = property(lambda self: int(self.payload["author"]["id"]))
    content = property(lambda self: self.payload["content"])
    embeds = property(lambda self: self.payload["embeds"])
    attachments = property(lambda self: self.payload["attachments"])
    flags = property(lambda self: self.payload["flags"])
    ephemeral = property(lambda self: bool(self.payload["flags"] & EPHEMERAL))
    loading = property(lambda self: bool(self.payload["flags"] & LOADING))
    edit_times = property(lambda self: [e.at for e in self.edits])

    @property
    def components(self) -> list[dict]:
        """Interactive components (buttons, selects, text inputs), flattened, in order."""
        out: list[dict] = []

        def walk(items: Iterable[dict]) -> None:
            for c in items:
                if c["type"] in (1, 17):
                    walk(c.get("components", []))
                elif c["type"] == 9:
                    walk(c.get("components", []) + ([c["accessory"]] if "accessory" in c else []))
                elif c["type"] in (2, 3, 4, 5, 6, 7, 8):
                    out.append(c)
        walk(self.payload["components"])
        return out

    @property
    def buttons(self) -> list[dict]:
        return [c for c in self.components if c["type"] == 2]

    def component(self, custom_id: str) -> Optional[dict]:
        return next((c for c in self.components if c.get("custom_id") == custom_id), None)

    def attachment_bytes(self, which: int | str = 0) -> bytes:
        """Bytes of an attachment, by index or filename."""
        atts = self.attachments
        att = atts[which] if isinstance(which, int) else next(a for a in atts if a["filename"] == which)
        return self.files[att["id"]].data


@dataclass(eq=False)
class FakeInteraction:
    """One interaction sent to the bot, and everything the bot did with it."""
    server: "DiscordServer"
    id: int
    token: str
    type: int
    payload: dict
    user: User
    channel_id: int
    created: float  # event-loop time the interaction counts as created
    source_message_id: Optional[int] = None  # message of the component that started it
    parent_id: Optional[int] = None  # for a modal submit: the interaction that opened the modal
    callback: Optional[dict] = None  # the accepted callback body (``{"type": .., "data": ..}``)
    callback_at: Optional[float] = None
    rejected: list[dict] = field(default_factory=list)  # error bodies of refused requests
    original_id: Optional[int] = None
    followup_ids: list[int] = field(default_factory=list)
    choices: Optional[list[dict]] = None  # autocomplete answer
    modal: Optional[dict] = None  # modal the bot opened (callback type 9)

    @property
    def response_type(self) -> Optional[int]:
        return self.callback and self.callback["type"]

    @property
    def original(self) -> Optional[StoredMessage]:
        return self.server.messages.get(self.original_id) if self.original_id else None

    @property
    def followups(self) -> list[StoredMessage]:
        return [self.server.messages[i] for i in self.followup_ids]

    async def wait_response(self, timeout: float = 5.0) -> dict:
        """The accepted callback body, once the bot acknowledged the interaction."""
        return await self.server.wait_for(lambda: self.callback, timeout, f"a response to interaction {self.id}")

    async def wait_followup(self, count: int = 1, timeout: float = 5.0) -> StoredMessage:
        """The ``count``-th followup message (1-based)."""
        await self.server.wait_for(lambda: len(self.followup_ids) >= count, timeout, f"{count} followup(s)")
        return self.followups[count - 1]

    async def wait_original(self, predicate: Callable[[StoredMessage], bool] = lambda m: not m.loading,
                            timeout: float = 5.0) -> StoredMessage:
        """The original response message once ``predicate`` holds (default: no longer loading)."""
        return await self.server.wait_for(lambda: self.original if self.original and predicate(self.original)
                                          else None, timeout, "the original response")


class _ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: Optional[dict] = None):
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors

    def body(self) -> dict:
        body = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return body


def _form_error(path: str, code: str, message: str) -> _ApiError:
    errors: dict = {"_errors": [{"code": code, "message": message}]}
    for part in reversed([p for p in path.split("/") if p and p != "<body>"]):
        errors = {part: errors}
    return _ApiError(400, 50035, "Invalid Form Body", errors)


@dataclass
class RequestRecord:
    method: str
    path: str  # without the /api/v10 prefix
    status: int
    at: float
    body: Any = None


@dataclass
class _RateLimitRule:
    method: str
    pattern: re.Pattern
    count: int
    retry_after: float
    is_global: bool


class _Connection:
    """One gateway websocket; sends are serialised so the zlib stream stays in order."""

    def __init__(self, ws: web.WebSocketResponse, compressor: Any):
        self.ws, self.compressor = ws, compressor
        self.lock = asyncio.Lock()
        self.session: Optional[_Session] = None
        self.ready = False

    async def send(self, payload: dict) -> bool:
        data = _dumps(payload)
        async with self.lock:
            if self.ws.closed:
                return False
            try:
                if self.compressor is None:
                    await self.ws.send_str(data)
                else:
                    await self.ws.send_bytes(self.compressor.compress(data.encode())
                                             + self.compressor.flush(zlib.Z_SYNC_FLUSH))
            except (ConnectionError, RuntimeError):
                return False
        return True


@dataclass(eq=False)
class _Session:
    id: str
    intents: int
    seq: int = 0
    log: list[dict] = field(default_factory=list)
    connection: Optional[_Connection] = None
    invalid: bool = False


# --------------------------------------------------------------------------- the server

class DiscordServer:
    """The fake Discord.  ``async with DiscordServer() as server:`` or ``start()``/``close()``.

    One guild by default (``server.guild``) owned by ``server.owner`` (all permissions), with
    members ``alice`` and ``bob`` (``@everyone`` permissions) and text channels ``general``
    and ``art``.  The bot user is ``server.bot_user``; its application id equals its user id.
    """

    def __init__(self, token: str = "test-token", *, host: str = "127.0.0.1", port: int = 0,
                 ack_deadline: float = 3.0, token_lifetime: float = 15 * 60,
                 heartbeat_interval_ms: int = 41250, privileged_intents: int = Intents.PRIVILEGED,
                 attachment_size_limit: int = 10 * 1024 * 1024, openapi_path: Optional[Path] = None):
        self.token, self.host, self.port = token, host, port
        self.ack_deadline, self.token_lifetime = ack_deadline, token_lifetime
        self.heartbeat_interval_ms, self.privileged_intents = heartbeat_interval_ms, privileged_intents
        self.attachment_size_limit = attachment_size_limit
        self.openapi = _openapi(openapi_path or _find_openapi())
        self._ids = itertools.count()

        self.protocol_errors: list[str] = []  # bot bugs / fake drift: make the test fail
        self.api_errors: list[RequestRecord] = []  # Discord-style 4xx answers given
        self.requests: list[RequestRecord] = []
        self.rate_limit_hits: list[RequestRecord] = []  # injected 429s that were served
        self.undelivered: list[tuple[str, str]] = []  # (event, reason) not sent to the bot
        self.messages: dict[int, StoredMessage] = {}
        self.interactions: dict[int, FakeInteraction] = {}
        self.global_commands: list[dict] = []
        self.guild_commands: dict[int, list[dict]] = {}
        self.command_syncs: list[tuple[Optional[int], list[str]]] = []  # (guild id or None, names)
        self.identify_count = self.resume_count = 0
        self._cdn: dict[str, StoredFile] = {}
        self._rate_rules: list[_RateLimitRule] = []
        self._sessions: dict[str, _Session] = {}
        self.session: Optional[_Session] = None  # the bot's current gateway session
        self._waiters: list[asyncio.Future] = []
        self._tasks: set[asyncio.Task] = set()
        self._sockets: set[web.WebSocketResponse] = set()
        self._runner: Optional[web.AppRunner] = None

        self.users: dict[int, User] = {}
        # Private channels the bot opened (POST /users/@me/channels), by channel id, and the
        # users who accept no private messages from the bot (Discord answers 50007).
        self.dm_channels: dict[int, DMChannel] = {}
        self.dms_closed: set[int] = set()
        self.bot_user = self._new_user("ArtBot", bot=True)
        self.application_id = self.bot_user.id
        owner = self._new_user("owner")
        gid = self.snowflake()
        self.guild = Guild(gid, "Test Guild", owner.id)
        self.guilds = {gid: self.guild}
        self.guild.roles[gid] = Role(gid, "@everyone", Permissions.EVERYONE)
        self.bot_role = self.add_role("ArtBot", Permissions.EVERYONE | Permissions.MANAGE_MESSAGES, managed=True)
        self._add_member(self.bot_user, [self.bot_role.id])
        self.owner = self._add_member(owner, [self.add_role("Admin", Permissions.ADMINISTRATOR).id])
        self.alice, self.bob = self.add_member("alice"), self.add_member("bob")
        self.general, self.art = self.add_channel("general"), self.add_channel("art")
        self._routes = self._route_table()

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> "DiscordServer":
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._handle_api)
        app.router.add_get("/gateway", self._handle_gateway)
        app.router.add_get("/attachments/{channel}/{att}/{filename}", self._handle_cdn)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=1001)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "DiscordServer":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    url = property(lambda self: f"http://{self.host}:{self.port}")
    api_base = property(lambda self: f"{self.url}/api/v10")  # for discord.http.Route.BASE
    gateway_url = property(lambda self: f"ws://{self.host}:{self.port}/gateway")

    def assert_clean(self, *, allow_codes: Iterable[int] = ()) -> None:
        """Fail if the bot broke the protocol or got a Discord error not in ``allow_codes``."""
        allowed = set(allow_codes)
        problems = list(self.protocol_errors)
        problems += [f"{r.status} {r.path}: {r.body}" for r in self.api_errors
                     if isinstance(r.body, dict) and r.body.get("code") not in allowed]
        assert not problems, "Discord protocol problems:\n  " + "\n  ".join(problems)

    def _error(self, message: str) -> None:
        self.protocol_errors.append(message)

    # ---- ids, world building ---------------------------------------------------------------

    def snowflake(self, at: Optional[float] = None) -> int:
        """A realistic, time-based snowflake (``at`` is a Unix time; default now)."""
        ms = int((time.time() if at is None else at) * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (1 << 17) | (next(self._ids) & 0xFFF)

    def _new_user(self, name: str, bot: bool = False) -> User:
        user = User(self.snowflake(), name, bot)
        self.users[user.id] = user
        return user

    def _add_member(self, user: User, roles: list[int], guild: Optional[Guild] = None) -> Member:
        guild = guild or self.guild
        member = Member(user, guild, roles, _iso(time.time()))
        guild.members[user.id] = member
        return member

    def add_role(self, name: str, permissions: int = 0, *, managed: bool = False) -> Role:
        role = Role(self.snowflake(), name, permissions, len(self.guild.roles), managed)
        self.guild.roles[role.id] = role
        return role

    def add_member(self, name: str, *, permissions: Optional[int] = None, roles: Iterable[Role | int] = (),
                   bot: bool = False) -> Member:
        """A new guild member; ``permissions`` gives it a role with exactly those bits."""
        role_ids = [r.id if isinstance(r, Role) else int(r) for r in roles]
        if permissions is not None:
            role_ids.append(self.add_role(f"{name}-role", permissions).id)
        member = self._add_member(self._new_user(name, bot), role_ids)
        if self.session:
            self._spawn(self.dispatch("GUILD_MEMBER_ADD", {**member.payload(), "guild_id": str(self.guild.id)},
                                      intent=Intents.GUILD_MEMBERS))
        return member

    def add_channel(self, name: str, *, topic: Optional[str] = None, nsfw: bool = False) -> Channel:
        channel = Channel(self.snowflake(), self.guild.id, name, len(self.guild.channels), topic=topic,
                          nsfw=nsfw)
        self.guild.channels[channel.id] = channel
        if self.session:
            self._spawn(self.dispatch("CHANNEL_CREATE", channel.payload(), intent=Intents.GUILDS))
        return channel

    def add_guild(self, name: str, *, members: Iterable[Member | User] = ()) -> Guild:
        """Another server, owned by ``server.owner``, with a ``general`` text channel; the bot
        and ``members`` (with ``@everyone`` permissions) are in it. Call before the bot
        connects: it learns its guilds at READY."""
        gid = self.snowflake()
        guild = Guild(gid, name, self.owner.id)
        guild.roles[gid] = Role(gid, "@everyone", Permissions.EVERYONE)
        bot_role = Role(self.snowflake(), "ArtBot", Permissions.EVERYONE | Permissions.MANAGE_MESSAGES, 1, True)
        guild.roles[bot_role.id] = bot_role
        self._add_member(self.bot_user, [bot_role.id], guild)
        self._add_member(self.owner.user, [], guild)
        for m in members:
            self._add_member(m.user if isinstance(m, Member) else m, [], guild)
        channel = Channel(self.snowflake(), gid, "general", 0)
        guild.channels[channel.id] = channel
        self.guilds[gid] = guild
        return guild

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _channel(self, channel_id: int) -> Channel:
        for guild in self.guilds.values():
            if channel_id in guild.channels:
                return guild.channels[channel_id]
        if channel_id in self.dm_channels:
            return self.dm_channels[channel_id]  # type: ignore[return-value]
        raise _ApiError(404, 10003, "Unknown Channel")

    def dm_channel(self, user: User | Member) -> Optional[DMChannel]:
        """The private channel the bot opened with ``user``, if any."""
        return next((c for c in self.dm_channels.values() if c.recipient.id == user.id), None)

    def dms_to(self, user: User | Member) -> list[StoredMessage]:
        """The private messages the bot sent ``user``, oldest first."""
        channel = self.dm_channel(user)
        return [] if channel is None else self.messages_in(channel.id)

    def close_dms(self, user: User | Member) -> None:
        """``user`` accepts no private messages from the bot (as with "Allow direct messages
        from server members" off): sending them one fails with 50007."""
        self.dms_closed.add(user.id)

    def _guild_of(self, channel: Channel) -> Guild:
        return self.guilds[channel.guild_id]

    def _bot_needs(self, channel: Channel, perms: int) -> None:
        if isinstance(channel, DMChannel):
            return  # no permissions in a private channel
        have = self._guild_of(channel).permissions_of(self.bot_user.id)
        if have & perms != perms:
            raise _ApiError(403, 50013, "Missing Permissions")

    # ---- waiting ---------------------------------------------------------------------------

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
        """Wait until ``predicate()`` is truthy (re-checked on every change); return its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"fake Discord: timed out after {timeout}s waiting for {what}")
            fut = loop.create_future()
            self._waiters.append(fut)
            await asyncio.wait([fut], timeout=remaining)

    async def wait_until_ready(self, timeout: float = 5.0) -> None:
        """Until a bot is connected and has had READY and its GUILD_CREATEs (or RESUMED)."""
        await self.wait_for(lambda: self.session and self.session.connection and self.session.connection.ready,
                            timeout, "the bot to connect to the gateway")

    async def wait_for_commands(self, *names: str, guild_id: Optional[int] = None, timeout: float = 5.0) -> None:
        await self.wait_for(lambda: all(self.command(n, guild_id) for n in names), timeout, f"sync of {names}")

    async def wait_for_message(self, channel_id: Optional[int] = None,
                               predicate: Callable[[StoredMessage], bool] = lambda m: True,
                               timeout: float = 5.0) -> StoredMessage:
        """The oldest live message (existing or future) in the channel matching ``predicate``."""
        def find() -> Optional[StoredMessage]:
            return next((m for m in self.messages.values() if not m.deleted and not m.loading
                         and (channel_id is None or m.channel_id == channel_id) and predicate(m)), None)
        return await self.wait_for(find, timeout, "a matching message")

    # ---- inspection ------------------------------------------------------------------------

    def commands(self, guild_id: Optional[int] = None) -> list[dict]:
        """Synced commands: global ones, or those of ``guild_id``."""
        return self.global_commands if guild_id is None else self.guild_commands.get(guild_id, [])

    def command(self, name: str, guild_id: Optional[int] = None) -> Optional[dict]:
        return next((c for c in self.commands(guild_id) if c["name"] == name and c["type"] == 1), None)

    def message(self, message_id: int) -> StoredMessage:
        return self.messages[message_id]

    def messages_in(self, channel: Channel | int, *, include_ephemeral: bool = False) -> list[StoredMessage]:
        cid = channel.id if isinstance(channel, Channel) else channel
        return [m for m in self.messages.values() if m.channel_id == cid and not m.deleted
                and (include_ephemeral or not m.ephemeral)]

    def requests_to(self, method: str, path_regex: str) -> list[RequestRecord]:
        return [r for r in self.requests if r.method == method and re.search(path_regex, r.path)]

    # ---- test controls ---------------------------------------------------------------------

    def inject_rate_limit(self, method: str, path_regex: str, count: int = 1, retry_after: float = 0.3,
                          is_global: bool = False) -> None:
        """The next ``count`` requests matching (method or ``"*"``, regex on the path after
        ``/api/v10``) get a 429 with ``retry_after`` seconds; recorded in ``rate_limit_hits``."""
        self._rate_rules.append(_RateLimitRule(method.upper(), re.compile(path_regex), count, retry_after,
                                               is_global))

    def expire_interaction(self, interaction: FakeInteraction | int) -> None:
        """Age an interaction past its 15-minute token lifetime (and the 3 s ack window)."""
        ix = interaction if isinstance(interaction, FakeInteraction) else self.interactions[interaction]
        ix.created = asyncio.get_running_loop().time() - self.token_lifetime - 1

    async def request_reconnect(self, *, resumable: bool = True, timeout: float = 5.0) -> None:
        """Send RECONNECT (op 7), or INVALID_SESSION (op 9, ``d: false``) when not resumable,
        and wait until the bot is back (RESUMED, or a fresh READY)."""
        session = self.session
        assert session and session.connection, "no bot connected"
        conn = session.connection
        if resumable:
            await conn.send({"op": 7, "d": None})
        else:
            session.invalid = True
            await conn.send({"op": 9, "d": False})
        await self.wait_for(lambda: self.session and self.session.connection not in (None, conn)
                            and self.session.connection.ready, timeout, "the bot to reconnect")

    # ---- gateway ---------------------------------------------------------------------------

    async def dispatch(self, event: str, data: dict, *, intent: int = 0) -> bool:
        """Send a DISPATCH to the bot's session (kept for RESUME replay).  Events whose intent
        the bot did not request are not sent (as on Discord) and noted in ``undelivered``."""
        session = self.session
        if session is None or session.invalid:
            self.undelivered.append((event, "no gateway session"))
            return False
        if intent and not session.intents & intent:
            self.undelivered.append((event, "intent not requested"))
            return False
        session.seq += 1
        payload = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.log.append(payload)
        if session.connection:
            await session.connection.send(payload)
        return True

    async def _handle_gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        q = request.query
        compressor = None
        if q.get("v") != "10" or q.get("encoding") != "json":
            self._error(f"gateway: bad query {dict(q)} (want v=10&encoding=json)")
            await ws.close(code=4012 if q.get("v") != "10" else 4002)
            return ws
        if q.get("compress") == "zlib-stream":
            compressor = zlib.compressobj()
        elif "compress" in q:
            self._error(f"gateway: unsupported compress={q['compress']}")
            await ws.close(code=4002)
            return ws
        conn = _Connection(ws, compressor)
        self._sockets.add(ws)
        try:
            await conn.send({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms,
                                             "_trace": ["[\"fake-discord-gateway\"]"]}})
            async for msg in ws:
                if msg.type.name == "ERROR":
                    break
                if msg.type.name != "TEXT":
                    self._error(f"gateway: unexpected {msg.type.name} frame from the client")
                    await ws.close(code=4002)
                    break
                try:
                    payload = json.loads(msg.data)
                except ValueError:
                    self._error("gateway: undecodable frame")
                    await ws.close(code=4002)
                    break
                await self._gateway_op(conn, payload)
        finally:
            self._sockets.discard(ws)
            session = conn.session
            if session and session.connection is conn:
                session.connection = None
                if ws.close_code in (1000, 1001):
                    session.invalid = True  # a clean close ends the session: no RESUME after it
            self._notify()
        return ws

    async def _gateway_op(self, conn: _Connection, payload: dict) -> None:
        op, d = payload.get("op"), payload.get("d")
        if op == 1:
            await asyncio.sleep(0.005)  # an instant ACK races discord.py's keep-alive bookkeeping
            await conn.send({"op": 11})
        elif op == 2:
            await self._identify(conn, d or {})
        elif op == 6:
            await self._resume(conn, d or {})
        elif conn.session is None:
            self._error(f"gateway: op {op} before IDENTIFY")
            await conn.ws.close(code=4003)
        elif op == 8:
            await self._request_members(conn, d or {})
        elif op in (3, 4):
            pass  # presence / voice state updates: accepted, nothing to emulate
        else:
            self._error(f"gateway: unknown op {op}")
            await conn.ws.close(code=4001)

    async def _identify(self, conn: _Connection, d: dict) -> None:
        if conn.session is not None:
            self._error("gateway: IDENTIFY twice on one connection")
            await conn.ws.close(code=4005)
            return
        if d.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = d.get("intents")
        if not isinstance(intents, int) or not isinstance(d.get("properties"), dict):
            self._error(f"gateway: IDENTIFY without intents/properties: {sorted(d)}")
            await conn.ws.close(code=4013 if not isinstance(intents, int) else 4002)
            return
        if intents & Intents.PRIVILEGED & ~self.privileged_intents:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        self.identify_count += 1
        if self.session:
            self.session.invalid = True
        session = _Session(secrets.token_hex(16), intents, connection=conn)
        self._sessions[session.id] = self.session = session
        conn.session = session
        app_flags = ((1 << 13 if self.privileged_intents & Intents.GUILD_PRESENCES else 0)
                     | (1 << 15 if self.privileged_intents & Intents.GUILD_MEMBERS else 0)
                     | (1 << 19 if self.privileged_intents & Intents.MESSAGE_CONTENT else 0))
        ready = {"v": 10, "user": {**self.bot_user.payload(), "verified": True, "mfa_enabled": False,
                                   "email": None}, "user_settings": {}, "session_type": "normal",
                 "session_id": session.id, "resume_gateway_url": self.gateway_url, "relationships": [],
                 "private_channels": [], "presences": [], "guild_join_requests": [],
                 "geo_ordered_rtc_regions": ["local"], "auth": {}, "_trace": ["[\"fake-discord\"]"],
                 "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
                 "application": {"id": str(self.application_id), "flags": app_flags}}
        if "shard" in d:
            ready["shard"] = d["shard"]
        await self.dispatch("READY", ready)
        for guild in self.guilds.values():
            # Without GUILD_PRESENCES Discord only lists the bot itself (and voice members).
            members = (guild.members.values() if intents & Intents.GUILD_PRESENCES
                       else [guild.members[self.bot_user.id]])
            await self.dispatch("GUILD_CREATE", guild.payload(
                members=members, joined_at=guild.members[self.bot_user.id].joined_at))
        conn.ready = True
        self._notify()

    async def _resume(self, conn: _Connection, d: dict) -> None:
        session = self._sessions.get(d.get("session_id"))
        if d.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        if session is None or session.invalid or not isinstance(d.get("seq"), int):
            await asyncio.sleep(0.01)
            await conn.send({"op": 9, "d": False})
            return
        self.resume_count += 1
        conn.session, session.connection = session, conn
        self.session = session
        for payload in [p for p in session.log if p["s"] > d["seq"]]:
            await conn.send(payload)
        await self.dispatch("RESUMED", {"_trace": ["[\"fake-discord\"]"]})
        conn.ready = True
        self._notify()

    async def _request_members(self, conn: _Connection, d: dict) -> None:
        guild = self.guilds.get(int(d.get("guild_id", 0)))
        if guild is None or not conn.session.intents & Intents.GUILD_MEMBERS:
            self._error(f"gateway: REQUEST_GUILD_MEMBERS refused (unknown guild or no GUILD_MEMBERS intent): {d}")
            return
        members = list(guild.members.values())
        if d.get("user_ids"):
            wanted = {int(u) for u in (d["user_ids"] if isinstance(d["user_ids"], list) else [d["user_ids"]])}
            members = [m for m in members if m.id in wanted]
        elif d.get("query"):
            members = [m for m in members if m.user.username.lower().startswith(d["query"].lower())]
        if d.get("limit"):
            members = members[:d["limit"]]
        chunk = {"guild_id": str(guild.id), "members": [m.payload() for m in members], "chunk_index": 0,
                 "chunk_count": 1}
        if d.get("nonce") is not None:
            chunk["nonce"] = d["nonce"]
        await self.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    # ---- REST plumbing ---------------------------------------------------------------------

    def _route_table(self) -> list[tuple[str, re.Pattern, Callable, str, bool]]:
        """(method, path regex, handler, OpenAPI path, needs bot authorization)."""
        S, WH, CH = r"(?P<{}>\d+)", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)", r"/channels/(?P<channel>\d+)"
        m = r"/messages/(?P<message>\d+)"
        cmds = r"/applications/(?P<app>\d+)(?:/guilds/(?P<guild>\d+))?/commands"
        table = [
            ("GET", r"/users/@me", self._get_me, "/users/@me", True),
            ("POST", r"/users/@me/channels", self._create_dm, "/users/@me/channels", True),
            ("GET", r"/users/" + S.format("user"), self._get_user, "/users/{user_id}", True),
            ("GET", r"/oauth2/applications/@me", self._get_application, "/oauth2/applications/@me", True),
            ("GET", r"/gateway", self._get_gateway, "/gateway", False),
            ("GET", r"/gateway/bot", self._get_gateway, "/gateway/bot", True),
            ("GET", cmds, self._get_commands, "/applications/{application_id}/commands", True),
            ("PUT", cmds, self._put_commands, "/applications/{application_id}/commands", True),
            ("POST", r"/interactions/(?P<id>\d+)/(?P<token>[^/]+)/callback", self._callback,
             "/interactions/{interaction_id}/{interaction_token}/callback", False),
            ("POST", WH, self._webhook_execute, "/webhooks/{webhook_id}/{webhook_token}", False),
            ("GET", WH + r"/messages/(?P<message>@original|\d+)", self._webhook_message,
             "/webhooks/{webhook_id}/{webhook_token}/messages/@original", False),
            ("PATCH", WH + r"/messages/(?P<message>@original|\d+)", self._webhook_message,
             "/webhooks/{webhook_id}/{webhook_token}/messages/@original", False),
            ("DELETE", WH + r"/messages/(?P<message>@original|\d+)", self._webhook_message,
             "/webhooks/{webhook_id}/{webhook_token}/messages/@original", False),
            ("GET", CH, self._get_channel, "/channels/{channel_id}", True),
            ("POST", CH + r"/typing", self._typing, "/channels/{channel_id}/typing", True),
            ("GET", CH + r"/messages", self._list_messages, "/channels/{channel_id}/messages", True),
            ("POST", CH + r"/messages", self._create_message, "/channels/{channel_id}/messages", True),
            ("GET", CH + m, self._channel_message, "/channels/{channel_id}/messages/{message_id}", True),
            ("PATCH", CH + m, self._channel_message, "/channels/{channel_id}/messages/{message_id}", True),
            ("DELETE", CH + m, self._channel_message, "/channels/{channel_id}/messages/{message_id}", True),
            ("PUT", CH + m + r"/reactions/(?P<emoji>[^/]+)/@me", self._own_reaction,
             "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me", True),
            ("DELETE", CH + m + r"/reactions/(?P<emoji>[^/]+)/@me", self._own_reaction,
             "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me", True),
            ("GET", r"/guilds/" + S.format("guild"), self._get_guild, "/guilds/{guild_id}", True),
            ("GET", r"/guilds/" + S.format("guild") + r"/channels", self._get_guild_channels,
             "/guilds/{guild_id}/channels", True),
            ("GET", r"/guilds/" + S.format("guild") + r"/members/" + S.format("user"), self._get_member,
             "/guilds/{guild_id}/members/{user_id}", True),
        ]
        return [(meth, re.compile(rx), fn, api, auth) for meth, rx, fn, api, auth in table]

    def _headers(self, bucket: str) -> dict:
        now = time.time()
        return {"X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "49", "X-RateLimit-Reset": f"{now + 1:.3f}",
                "X-RateLimit-Reset-After": "1.000", "X-RateLimit-Bucket": bucket, "Via": "1.1 google"}

    def _respond(self, status: int, body: Any, bucket: str, extra: Optional[dict] = None) -> web.Response:
        headers = {**self._headers(bucket), **(extra or {})}
        if status == 204:  # no body, so no Content-Type (discord.py would try to parse "" as JSON)
            return web.Response(status=204, headers=headers)
        headers["Content-Type"] = "application/json"  # exactly; web.json_response adds a charset
        return web.Response(status=status, body=_dumps(body).encode(), headers=headers)

    async def _handle_unknown(self, request: web.Request) -> web.Response:
        self._error(f"unknown URL {request.method} {request.path}")
        return self._respond(404, {"message": "404: Not Found", "code": 0}, "unknown")

    async def _handle_cdn(self, request: web.Request) -> web.Response:
        stored = self._cdn.get(request.match_info["att"])
        if stored is None or request.method != "GET":
            self._error(f"CDN: unknown attachment {request.path}")
            return web.Response(status=404)
        return web.Response(body=stored.data, headers={"Content-Type": stored.content_type})

    async def _handle_api(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        loop = asyncio.get_running_loop()
        record = RequestRecord(request.method, path, 0, loop.time())
        self.requests.append(record)
        route = next(((fn, api, auth, mt.groupdict()) for meth, rx, fn, api, auth in self._routes
                      if meth == request.method and (mt := rx.fullmatch(path))), None)
        if route is None:
            self._error(f"unknown route {request.method} /api/v10{path}")
            record.status = 404
            return self._respond(404, {"message": "404: Not Found", "code": 0}, "unknown")
        fn, api_path, auth, params = route
        bucket = hashlib.md5(f"{request.method} {api_path}".encode()).hexdigest()[:16]
        for rule in self._rate_rules:
            if rule.count > 0 and rule.method in ("*", request.method) and rule.pattern.search(path):
                rule.count -= 1
                record.status = 429
                self.rate_limit_hits.append(record)
                headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": f"{rule.retry_after:.3f}",
                           "X-RateLimit-Reset": f"{time.time() + rule.retry_after:.3f}",
                           "Retry-After": str(max(1, math.ceil(rule.retry_after))), "X-RateLimit-Scope": "user"}
                if rule.is_global:
                    headers["X-RateLimit-Global"] = "true"
                return self._respond(429, {"message": "You are being rate limited.", "retry_after": rule.retry_after,
                                           "global": rule.is_global, "code": 0}, bucket, headers)
        try:
            if auth and request.headers.get("Authorization") != f"Bot {self.token}":
                raise _ApiError(401, 0, "401: Unauthorized")
            body, files = await self._read_body(request, api_path)
            record.body = body
            status, answer = await fn(request, params, body, files)
            if status == 200 and (schema := self.openapi.response_schema(api_path, request.method, 200)):
                for err in self.openapi.errors(schema, answer)[:1]:
                    self._error(f"fake drift: response to {request.method} {path} breaks the OpenAPI schema: {err}")
        except _ApiError as exc:
            status, answer = exc.status, exc.body()
            self.api_errors.append(RequestRecord(request.method, path, status, record.at, answer))
            ix = self.interactions.get(int(params.get("id") or 0)) or self._by_token(params.get("token"))
            if ix:
                ix.rejected.append(answer)
            self._notify()
        except Exception as exc:  # a bug in the fake: fail the test, but answer fast
            self._error(f"fake Discord crashed on {request.method} {path}: {exc!r}")
            status, answer = 400, {"message": f"fake server error: {exc!r}", "code": 0}
        record.status = status
        return self._respond(status, answer, bucket)

    async def _read_body(self, request: web.Request, api_path: str) -> tuple[Any, list[tuple[int, StoredFile]]]:
        """Parse a JSON or multipart body and check it against the OpenAPI request schema."""
        schema = self.openapi.request_schema(api_path, request.method)
        ctype = request.content_type
        files: list[tuple[int, StoredFile]] = []
        if not request.body_exists:
            body = None
        elif ctype == "application/json":
            try:
                body = json.loads(await request.text())
            except ValueError:
                self._error(f"{request.method} {request.path}: body is not JSON")
                raise _ApiError(400, 50109, "The request body contains invalid JSON.")
        elif ctype == "multipart/form-data":
            body = None
            reader = await request.multipart()
            async for part in reader:
                name = part.name or ""
                if name == "payload_json":
                    body = json.loads(await part.text())
                elif mt := re.fullmatch(r"files\[(\d)\]", name):
                    data = bytes(await part.read())
                    if len(data) > self.attachment_size_limit:
                        raise _ApiError(413, 40005, "Request entity too large")
                    fname = part.filename or name
                    guessed = mimetypes.guess_type(fname)[0] or "application/octet-stream"
                    files.append((int(mt.group(1)), StoredFile(fname, guessed, data)))
                else:
                    self._error(f"{request.method} {request.path}: unexpected multipart field {name!r}")
                    raise _form_error(name, "BASE_TYPE_INVALID", "Unknown form field")
            if body is None:
                self._error(f"{request.method} {request.path}: multipart without payload_json")
                raise _form_error("payload_json", "BASE_TYPE_REQUIRED", "This field is required")
        else:
            self._error(f"{request.method} {request.path}: unexpected Content-Type {ctype!r}")
            raise _ApiError(400, 50109, "The request body contains invalid JSON.")
        if schema is not None:
            if body is None and request.method in ("POST", "PUT"):
                self._error(f"{request.method} {request.path}: missing request body")
                raise _form_error("", "BASE_TYPE_REQUIRED", "A request body is required")
            if body is not None and (errs := self.openapi.errors(schema, body)):
                self._error(f"{request.method} {request.path}: body breaks the OpenAPI schema: {errs[0]}")
                path, _, msg = errs[0].partition(": ")
                raise _form_error(path, "BASE_TYPE_INVALID", msg)
        elif body is not None and request.method in ("GET", "DELETE"):
            self._error(f"{request.method} {request.path}: unexpected request body")
        return body, files

    # ---- REST: login, gateway, commands ----------------------------------------------------

    async def _get_me(self, request, p, body, files):
        return 200, {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "locale": "en-US",
                     "email": None, "premium_type": 0}

    async def _create_dm(self, request, p, body, files):
        user = self.users.get(int(body.get("recipient_id") or 0))
        if user is None:
            raise _form_error("recipient_id", "NUMBER_TYPE_COERCE", "Value is not a known user")
        if user.bot:
            raise _ApiError(400, 50007, "Cannot send messages to this user")
        channel = self.dm_channel(user)
        if channel is None:
            channel = DMChannel(self.snowflake(), user)
            self.dm_channels[channel.id] = channel
        return 200, channel.payload()

    async def _get_user(self, request, p, body, files):
        user = self.users.get(int(p["user"]))
        if user is None:
            raise _ApiError(404, 10013, "Unknown User")
        return 200, user.payload()

    async def _get_application(self, request, p, body, files):
        return 200, {
            "id": str(self.application_id), "name": self.bot_user.username, "icon": None, "description": "",
            "type": None, "bot_public": True, "bot_require_code_grant": False, "bot": self.bot_user.payload(),
            "owner": self.users[self.guild.owner_id].payload(), "team": None, "verify_key": "0" * 64,
            "flags": 0, "flags_new": "0", "redirect_uris": [], "interactions_endpoint_url": None,
            "role_connections_verification_url": None, "approximate_guild_count": len(self.guilds),
            "approximate_user_install_count": 0, "approximate_user_authorization_count": 0,
            "explicit_content_filter": 0, "eligible_oauth2_scopes": [], "rpc_origins": [], "tags": [],
            "summary": "", "hook": True, "integration_types_config": {"0": {}},
        }

    async def _get_gateway(self, request, p, body, files):
        data = {"url": self.gateway_url}
        if request.path.endswith("/bot"):
            data.update(shards=1, session_start_limit={"total": 1000, "remaining": 999, "reset_after": 0,
                                                      "max_concurrency": 1})
        return 200, data

    def _command_scope(self, p: dict) -> Optional[int]:
        if int(p["app"]) != self.application_id:
            raise _ApiError(403, 50001, "Missing Access")
        if p.get("guild") and int(p["guild"]) not in self.guilds:
            raise _ApiError(403, 50001, "Missing Access")
        return int(p["guild"]) if p.get("guild") else None

    async def _get_commands(self, request, p, body, files):
        return 200, self.commands(self._command_scope(p))

    async def _put_commands(self, request, p, body, files):
        guild_id = self._command_scope(p)
        old = {(c["name"], c["type"]): c["id"] for c in self.commands(guild_id)}
        result, seen = [], set()
        for i, cmd in enumerate(body or []):
            ctype = cmd.get("type") or 1
            if (cmd["name"], ctype) in seen:
                raise self._bad_command(f"{i}/name", "APPLICATION_COMMANDS_DUPLICATE_NAME", "duplicate name")
            seen.add((cmd["name"], ctype))
            if ctype == 1:
                if not re.fullmatch(r"[-_'\w]{1,32}", cmd["name"]) or cmd["name"] != cmd["name"].lower():
                    raise self._bad_command(f"{i}/name", "APPLICATION_COMMAND_INVALID_NAME", "invalid name")
                if not cmd.get("description"):
                    raise self._bad_command(f"{i}/description", "BASE_TYPE_REQUIRED", "description required")
                self._check_options(cmd.get("options") or [], f"{i}/options")
            out = {"id": str(old.get((cmd["name"], ctype)) or self.snowflake()),
                   "application_id": str(self.application_id), "version": str(self.snowflake()),
                   "type": ctype, "name": cmd["name"], "description": cmd.get("description") or "",
                   "default_member_permissions": (None if cmd.get("default_member_permissions") is None
                                                  else str(cmd["default_member_permissions"])),
                   "nsfw": bool(cmd.get("nsfw")), "integration_types": cmd.get("integration_types") or [0],
                   "contexts": cmd.get("contexts"), "name_localizations": cmd.get("name_localizations"),
                   "description_localizations": cmd.get("description_localizations")}
            if cmd.get("options"):
                out["options"] = [self._clean_option(o) for o in cmd["options"]]
            if guild_id is not None:
                out["guild_id"] = str(guild_id)
            result.append(out)
        if guild_id is None:
            self.global_commands = result
        else:
            self.guild_commands[guild_id] = result
        self.command_syncs.append((guild_id, [c["name"] for c in result]))
        self._notify()
        return 200, result

    def _bad_command(self, path: str, code: str, message: str) -> _ApiError:
        self._error(f"command sync rejected at {path}: {message}")
        return _form_error(path, code, message)

    def _check_options(self, options: list[dict], path: str) -> None:
        names, optional_seen = set(), False
        kinds = {o["type"] in (1, 2) for o in options}
        if len(kinds) > 1:
            raise self._bad_command(path, "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID", "subcommands mixed with options")
        for j, opt in enumerate(options):
            if opt["name"] in names or opt["name"] != opt["name"].lower():
                raise self._bad_command(f"{path}/{j}/name", "APPLICATION_COMMAND_INVALID_NAME", "bad option name")
            names.add(opt["name"])
            if opt.get("required"):
                if optional_seen:
                    raise self._bad_command(f"{path}/{j}", "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                                            "required options must be placed before non-required options")
            else:
                optional_seen = True
            if opt.get("autocomplete") and opt.get("choices"):
                raise self._bad_command(f"{path}/{j}", "APPLICATION_COMMAND_OPTIONS_AUTOCOMPLETE_INVALID",
                                        "autocomplete may not be set on options with choices")
            if opt["type"] in (1, 2):
                self._check_options(opt.get("options") or [], f"{path}/{j}/options")

    def _clean_option(self, opt: dict) -> dict:
        out = {k: v for k, v in opt.items() if v is not None and v != [] and not (k == "required" and not v)
               and not (k == "autocomplete" and not v)}
        if "options" in out:
            out["options"] = [self._clean_option(o) for o in out["options"]]
        return out

    # ---- REST: interactions and webhooks ---------------------------------------------------

    def _by_token(self, token: Optional[str]) -> Optional[FakeInteraction]:
        return next((ix for ix in self.interactions.values() if ix.token == token), None) if token else None

    def _age(self, ix: FakeInteraction) -> float:
        return asyncio.get_running_loop().time() - ix.created

    async def _callback(self, request, p, body, files):
        ix = self.interactions.get(int(p["id"]))
        if ix is None or ix.token != p["token"]:
            raise _ApiError(404, 10062, "Unknown interaction")
        if ix.callback is not None:
            raise _ApiError(400, 40060, "Interaction has already been acknowledged.")
        if self._age(ix) > self.ack_deadline:
            raise _ApiError(404, 10062, "Unknown interaction")
        ctype, data = body["type"], body.get("data") or {}
        allowed = {2: {4, 5, 9}, 3: {4, 5, 6, 7, 9}, 4: {8},
                   5: {4, 5, 6, 7} if ix.source_message_id else {4, 5}}[ix.type]
        if ctype not in allowed:
            self._error(f"callback type {ctype} is not valid for an interaction of type {ix.type}")
            raise _form_error("type", "INTERACTION_RESPONSE_TYPE_INVALID", "Invalid interaction response type")
        channel = self._channel(ix.channel_id)
        resource_message = None
        if ctype == 4:
            msg = await self._new_message(channel, data, files, interaction=ix)
            ix.original_id, resource_message = msg.id, msg
        elif ctype == 5:
            flags = LOADING | (data.get("flags", 0) & EPHEMERAL)
            msg = await self._new_message(channel, {"flags": flags}, [], interaction=ix, allow_empty=True)
            ix.original_id = msg.id
        elif ctype in (6, 7):
            ix.original_id = ix.source_message_id
            if ctype == 7:
                resource_message = self.messages[ix.source_message_id]
                await self._edit_message(resource_message, data, files)
        elif ctype == 8:
            ix.choices = data.get("choices") or []
        elif ctype == 9:
            ix.modal = data
        ix.callback, ix.callback_at = body, asyncio.get_running_loop().time()
        self._notify()
        if not _truthy(request.query.get("with_response")):
            return 204, None
        original = ix.original
        answer: dict = {"interaction": {
            "id": str(ix.id), "type": ix.type, "channel_id": str(ix.channel_id), "guild_id": str(channel.guild_id),
            "response_message_loading": ctype == 5, "response_message_ephemeral": bool(original and original.ephemeral)}}
        if original is not None and ctype in (4, 5, 7):
            answer["interaction"]["response_message_id"] = str(original.id)
        if resource_message is not None:
            # OpenAPI: a resource is a created/updated message (types 4 and 7) or an activity.
            answer["resource"] = {"type": ctype, "message": copy.deepcopy(resource_message.payload)}
        return 200, answer

    def _webhook_interaction(self, p: dict) -> FakeInteraction:
        ix = self._by_token(p["token"])
        if (ix is None or int(p["app"]) != self.application_id or ix.callback is None or ix.type == 4
                or self._age(ix) > self.token_lifetime):
            raise _ApiError(404, 10015, "Unknown Webhook")
        return ix

    async def _webhook_execute(self, request, p, body, files):
        ix = self._webhook_interaction(p)
        original = ix.original
        if original is not None and original.loading and original.interaction_id == ix.id:
            # Discord: the first followup after a deferred (type 5) response replaces the
            # "thinking" message; it keeps the defer's visibility whatever the followup's flags.
            await self._edit_message(original, {k: v for k, v in body.items() if k != "flags"}, files)
            msg = original
        else:
            msg = await self._new_message(self._channel(ix.channel_id), body, files, interaction=ix)
        ix.followup_ids.append(msg.id)
        self._notify()
        return (200, msg.payload) if _truthy(request.query.get("wait")) else (204, None)

    async def _webhook_message(self, request, p, body, files):
        ix = self._webhook_interaction(p)
        mid = ix.original_id if p["message"] == "@original" else int(p["message"])
        if mid is None or (mid != ix.original_id and mid not in ix.followup_ids) or self.messages[mid].deleted:
            raise _ApiError(404, 10008, "Unknown Message")
        msg = self.messages[mid]
        if request.method == "PATCH":
            await self._edit_message(msg, body or {}, files)
        elif request.method == "DELETE":
            await self._delete_message(msg)
            return 204, None
        return 200, msg.payload

    # ---- REST: channels, messages, reactions, guilds ---------------------------------------

    async def _get_channel(self, request, p, body, files):
        return 200, self._channel(int(p["channel"])).payload()

    async def _typing(self, request, p, body, files):
        self._bot_needs(self._channel(int(p["channel"])), Permissions.SEND_MESSAGES)
        return 204, None

    def _live_message(self, p: dict) -> StoredMessage:
        channel = self._channel(int(p["channel"]))
        msg = self.messages.get(int(p["message"]))
        if msg is None or msg.deleted or msg.ephemeral or msg.channel_id != channel.id:
            raise _ApiError(404, 10008, "Unknown Message")
        return msg

    async def _list_messages(self, request, p, body, files):
        channel = self._channel(int(p["channel"]))
        self._bot_needs(channel, Permissions.VIEW_CHANNEL | Permissions.READ_MESSAGE_HISTORY)
        q = request.query
        limit = int(q.get("limit", 50))
        if not 1 <= limit <= 100:
            raise _form_error("limit", "NUMBER_TYPE_MAX", "limit must be between 1 and 100")
        msgs = sorted(self.messages_in(channel), key=lambda m: m.id, reverse=True)
        if "before" in q:
            msgs = [m for m in msgs if m.id < int(q["before"])]
        if "after" in q:
            msgs = sorted([m for m in msgs if m.id > int(q["after"])], key=lambda m: m.id)[:limit][::-1]
        return 200, [m.payload for m in msgs[:limit]]

    async def _create_message(self, request, p, body, files):
        channel = self._channel(int(p["channel"]))
        self._bot_needs(channel, Permissions.VIEW_CHANNEL | Permissions.SEND_MESSAGES
                        | (Permissions.ATTACH_FILES if files else 0))
        if (body.get("flags") or 0) & EPHEMERAL:
            raise _form_error("flags", "MESSAGE_FLAGS_INVALID", "ephemeral messages need an interaction")
        if isinstance(channel, DMChannel) and channel.recipient.id in self.dms_closed:
            raise _ApiError(403, 50007, "Cannot send messages to this user")
        msg = await self._new_message(channel, body, files)
        return 200, msg.payload

    async def _channel_message(self, request, p, body, files):
        msg = self._live_message(p)
        if request.method == "PATCH":
            if msg.author_id != self.bot_user.id:
                raise _ApiError(403, 50005, "Cannot edit a message authored by another user")
            await self._edit_message(msg, body or {}, files)
        elif request.method == "DELETE":
            if msg.author_id != self.bot_user.id:
                self._bot_needs(self._channel(msg.channel_id), Permissions.MANAGE_MESSAGES)
            await self._delete_message(msg)
            return 204, None
        return 200, msg.payload

    async def _own_reaction(self, request, p, body, files):
        msg = self._live_message(p)
        self._bot_needs(self._channel(msg.channel_id), Permissions.ADD_REACTIONS | Permissions.READ_MESSAGE_HISTORY)
        await self._react(self.bot_user, msg, unquote(p["emoji"]), add=request.method == "PUT")
        return 204, None

    async def _get_guild(self, request, p, body, files):
        guild = self.guilds.get(int(p["guild"]))
        if guild is None:
            raise _ApiError(404, 10004, "Unknown Guild")
        data = guild.payload(members=[], joined_at="")
        return 200, {k: v for k, v in data.items() if k not in ("channels", "members", "joined_at", "threads",
                     "large", "unavailable", "lazy", "member_count", "presences", "voice_states")}

    async def _get_guild_channels(self, request, p, body, files):
        guild = self.guilds.get(int(p["guild"]))
        if guild is None:
            raise _ApiError(404, 10004, "Unknown Guild")
        return 200, [c.payload() for c in guild.channels.values()]

    async def _get_member(self, request, p, body, files):
        guild = self.guilds.get(int(p["guild"]))
        member = guild and guild.members.get(int(p["user"]))
        if member is None:
            raise _ApiError(404, 10007, "Unknown Member")
        return 200, member.payload()

    # ---- messages --------------------------------------------------------------------------

    def _check_payload(self, schema_name: str, payload: Any, what: str) -> None:
        for err in self.openapi.errors(self.openapi.schema(schema_name), payload)[:1]:
            self._error(f"fake drift: {what} breaks {schema_name}: {err}")

    def _store_file(self, channel_id: int, f: StoredFile, *, ephemeral: bool = False) -> dict:
        att_id = str(self.snowflake())
        ctype = f.content_type
        if ctype == "application/octet-stream" and _image_size(f.data):
            ctype = {b"\x89P": "image/png", b"GI": "image/gif", b"\xff\xd8": "image/jpeg"}[f.data[:2]]
        self._cdn[att_id] = StoredFile(f.filename, ctype, f.data)
        url = f"{self.url}/attachments/{channel_id}/{att_id}/{f.filename}"
        att = {"id": att_id, "filename": f.filename, "size": len(f.data), "url": url, "proxy_url": url,
               "content_type": ctype}
        if size := _image_size(f.data):
            att["width"], att["height"] = size
        if ephemeral:
            att["ephemeral"] = True
        return att

    async def _new_message(self, channel: Channel, body: dict, files: list, *, author: Optional[User] = None,
                     interaction: Optional[FakeInteraction] = None, allow_empty: bool = False) -> StoredMessage:
        author = author or self.bot_user
        mid = self.snowflake()
        payload: dict = {
            "id": str(mid), "channel_id": str(channel.id),
            **({"guild_id": str(channel.guild_id)} if channel.guild_id else {}),
            "author": author.payload(), "content": "", "timestamp": _iso(time.time()), "edited_timestamp": None,
            "tts": bool(body.get("tts")), "mention_everyone": False, "mentions": [], "mention_roles": [],
            "attachments": [], "embeds": [], "components": [], "pinned": False, "type": 0,
            "flags": (body.get("flags") or 0) & (EPHEMERAL | LOADING | SUPPRESS_EMBEDS | COMPONENTS_V2 | 1 << 12),
        }
        if body.get("nonce") is not None:
            payload["nonce"] = body["nonce"]
        if interaction is not None:
            ix_user = interaction.user.payload()
            payload.update(webhook_id=str(self.application_id), application_id=str(self.application_id),
                           type=20 if interaction.type == 2 else 0)
            payload["interaction_metadata"] = self._interaction_metadata(interaction)
            if interaction.original_id is not None:  # a followup: points at the original response
                payload["interaction_metadata"]["original_response_message_id"] = str(interaction.original_id)
            if interaction.type == 2:
                payload["interaction"] = {"id": str(interaction.id), "type": 2, "user": ix_user,
                                          "name": interaction.payload["data"]["name"]}
        msg = StoredMessage(payload, interaction_id=interaction and interaction.id,
                            created_at=asyncio.get_running_loop().time())
        self._apply_body(msg, body, files, allow_empty=allow_empty)
        self.messages[mid] = msg
        self._check_payload("MessageResponse", payload, "stored message")
        if not msg.ephemeral:
            await self.dispatch("MESSAGE_CREATE", self._event_message(msg),
                                intent=Intents.DIRECT_MESSAGES if isinstance(channel, DMChannel)
                                else Intents.GUILD_MESSAGES)
        self._notify()
        return msg

    def _interaction_metadata(self, ix: FakeInteraction) -> dict:
        meta = {"id": str(ix.id), "type": ix.type, "user": ix.user.payload(),
                "authorizing_integration_owners": {"0": ix.payload["guild_id"]}}
        if ix.type == 3:
            meta["interacted_message_id"] = str(ix.source_message_id)
        elif ix.type == 5:
            meta["triggering_interaction_metadata"] = self._interaction_metadata(self.interactions[ix.parent_id])
        return meta

    async def _edit_message(self, msg: StoredMessage, body: dict, files: list) -> None:
        was_loading = msg.loading
        self._apply_body(msg, body, files, editing=True)
        msg.payload["flags"] &= ~LOADING
        if not was_loading:  # filling a deferred response is not shown as "(edited)"
            msg.payload["edited_timestamp"] = _iso(time.time())
        msg.edits.append(Edit(asyncio.get_running_loop().time(), copy.deepcopy(msg.payload)))
        self._check_payload("MessageResponse", msg.payload, "edited message")
        if not msg.ephemeral:
            await self.dispatch("MESSAGE_UPDATE", self._event_message(msg), intent=self._message_intent(msg))
        self._notify()

    async def _delete_message(self, msg: StoredMessage) -> None:
        msg.deleted = True
        if not msg.ephemeral:
            where = {"guild_id": msg.payload["guild_id"]} if "guild_id" in msg.payload else {}
            await self.dispatch("MESSAGE_DELETE", {"id": str(msg.id), "channel_id": str(msg.channel_id), **where},
                                intent=self._message_intent(msg))
        self._notify()

    @staticmethod
    def _message_intent(msg: StoredMessage) -> int:
        return Intents.GUILD_MESSAGES if "guild_id" in msg.payload else Intents.DIRECT_MESSAGES

    def _event_message(self, msg: StoredMessage) -> dict:
        data = copy.deepcopy(msg.payload)
        if "guild_id" not in data:  # a private message
            return data
        member = self.guilds[int(data["guild_id"])].members.get(msg.author_id)
        if member is not None:
            data["member"] = member.payload(with_user=False)
        return data

    def _apply_body(self, msg: StoredMessage, body: dict, files: list, *, editing: bool = False,
                    allow_empty: bool = False) -> None:
        """Apply a create/edit body (content, embeds, components, attachments, flags) like Discord."""
        payload, channel_id = msg.payload, msg.channel_id
        by_index = dict(files)
        if len(by_index) != len(files):
            raise _form_error("files", "BASE_TYPE_INVALID", "duplicate files[n] field")
        if body.get("attachments") is not None:
            attachments, used = [], set()
            old = {a["id"]: a for a in payload["attachments"]}
            for j, ref in enumerate(body["attachments"]):
                ref_id = str(ref["id"])
                if ref_id in old:
                    attachments.append(old[ref_id])
                elif ref_id.isdigit() and int(ref_id) in by_index:
                    f = by_index[int(ref_id)]
                    f = StoredFile(ref.get("filename") or f.filename, f.content_type, f.data)
                    att = self._store_file(channel_id, f)
                    if ref.get("description"):
                        att["description"] = ref["description"]
                    msg.files[att["id"]] = self._cdn[att["id"]]
                    attachments.append(att)
                    used.add(int(ref_id))
                else:
                    self._error(f"attachments[{j}] references unknown upload/attachment {ref_id}")
                    raise _form_error(f"attachments/{j}/id", "ATTACHMENT_NOT_FOUND", "Unknown attachment")
            if unused := set(by_index) - used:
                self._error(f"files{sorted(unused)} uploaded but not listed in payload attachments")
                raise _form_error("attachments", "ATTACHMENT_NOT_FOUND", "files not referenced in attachments")
            payload["attachments"] = attachments
        else:
            for _, f in sorted(files, key=lambda x: x[0]):
                att = self._store_file(channel_id, f)
                msg.files[att["id"]] = self._cdn[att["id"]]
                payload["attachments"].append(att)
        if len(payload["attachments"]) > 10:
            raise _form_error("attachments", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        if "content" in body:
            payload["content"] = body["content"] or ""
            if len(payload["content"]) > 2000:  # the OpenAPI allows 4000 (Nitro users); bots get 2000
                self._error("message content longer than 2000 characters")
                raise _form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
            self._parse_mentions(payload, body.get("allowed_mentions"))
        if body.get("embeds") is not None:
            payload["embeds"] = [self._normalize_embed(e, payload["attachments"]) for e in body["embeds"]]
            texts = [e.get(k) for e in payload["embeds"] for k in ("title", "description")]
            texts += [(e.get(k) or {}).get(n) for e in payload["embeds"] for k, n in (("footer", "text"),
                                                                                     ("author", "name"))]
            texts += [f.get(k) for e in payload["embeds"] for f in e.get("fields", []) for k in ("name", "value")]
            if sum(len(t) for t in texts if t) > 6000:
                self._error("embeds longer than 6000 characters in total")
                raise _form_error("embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")
        if body.get("components") is not None:
            counter = itertools.count(1)
            payload["components"] = [self._normalize_component(c, counter) for c in body["components"]]
        if editing and body.get("flags") is not None:
            keep = payload["flags"] & (EPHEMERAL | LOADING)
            payload["flags"] = keep | (body["flags"] & (SUPPRESS_EMBEDS | COMPONENTS_V2))
        if body.get("message_reference"):
            # Discord answers with snowflakes as strings, whatever type the request used.
            ref = {k: (str(v) if k.endswith("_id") and v is not None else v)
                   for k, v in body["message_reference"].items()}
            payload["message_reference"] = {"type": 0, "channel_id": str(channel_id), **ref}
            payload["type"] = 19
        if not allow_empty and not (payload["content"] or payload["embeds"] or payload["attachments"]
                                    or payload["components"] or body.get("poll")):
            raise _ApiError(400, 50006, "Cannot send an empty message")

    def _parse_mentions(self, payload: dict, allowed: Optional[dict]) -> None:
        content, guild = payload["content"], self.guilds.get(int(payload.get("guild_id") or 0))
        parse = None if allowed is None else set(allowed.get("parse") or [])
        ids = [int(x) for x in re.findall(r"<@!?(\d+)>", content)]
        payload["mentions"] = [self.users[i].payload() for i in dict.fromkeys(ids) if i in self.users
                               and (parse is None or "users" in parse or str(i) in (allowed.get("users") or []))]
        payload["mention_roles"] = [r for r in dict.fromkeys(re.findall(r"<@&(\d+)>", content))
                                    if guild is not None and int(r) in guild.roles]
        payload["mention_everyone"] = "@everyone" in content and (parse is None or "everyone" in parse)

    def _normalize_embed(self, embed: dict, attachments: list[dict]) -> dict:
        out = {k: v for k, v in embed.items() if v is not None}
        out.setdefault("type", "rich")
        for key in ("image", "thumbnail"):
            url = (out.get(key) or {}).get("url", "")
            if url.startswith("attachment://"):
                att = next((a for a in attachments if a["filename"] == url[len("attachment://"):]), None)
                if att is None:
                    out.pop(key)
                else:
                    out[key] = {"url": att["url"], "proxy_url": att["proxy_url"],
                                **{k: att[k] for k in ("width", "height", "content_type") if k in att}}
        return out

    def _normalize_component(self, comp: dict, counter: Iterable[int]) -> dict:
        """Discord echoes components without nulls and numbers each one (``id``)."""
        out = {k: ({kk: vv for kk, vv in v.items() if vv is not None} if isinstance(v, dict) else v)
               for k, v in comp.items() if v is not None}
        out.setdefault("id", next(counter))
        for key in ("components",):
            if key in out:
                out[key] = [self._normalize_component(c, counter) for c in out[key]]
        for key in ("accessory", "component"):
            if key in out:
                out[key] = self._normalize_component(out[key], counter)
        return out

    async def _react(self, user: User, msg: StoredMessage, emoji: str, *, add: bool) -> None:
        name, _, emoji_id = emoji.partition(":")
        users = msg.reactions.setdefault(emoji, [])
        if add == (user.id in users):
            return  # Discord: adding twice / removing a missing reaction is a silent no-op
        users.append(user.id) if add else users.remove(user.id)
        msg.reactions = {k: v for k, v in msg.reactions.items() if v}
        msg.payload["reactions"] = [
            {"emoji": {"id": k.partition(":")[2] or None, "name": k.partition(":")[0]}, "count": len(v),
             "count_details": {"burst": 0, "normal": len(v)}, "burst_colors": [], "me_burst": False,
             "burst_me": False, "me": self.bot_user.id in v, "burst_count": 0} for k, v in msg.reactions.items()]
        if not msg.payload["reactions"]:
            del msg.payload["reactions"]
        guild = self.guilds[int(msg.payload["guild_id"])]
        event = {"user_id": str(user.id), "channel_id": str(msg.channel_id), "message_id": str(msg.id),
                 "guild_id": str(guild.id), "emoji": {"id": emoji_id or None, "name": name}, "type": 0,
                 "burst": False}
        if add:
            event.update(member=guild.members[user.id].payload(), message_author_id=str(msg.author_id),
                         burst_colors=[])
        self._notify()
        await self.dispatch("MESSAGE_REACTION_ADD" if add else "MESSAGE_REACTION_REMOVE", event,
                            intent=Intents.GUILD_MESSAGE_REACTIONS)

    # ---- acting as Discord users -----------------------------------------------------------

    def _member(self, user: User | Member, guild: Guild) -> Member:
        member = guild.members.get(user.id)
        if member is None:
            raise ValueError(f"{user} is not a member of {guild.name}")
        return member

    async def _interact(self, itype: int, user: User | Member, channel: Channel | int, data: dict, *,
                        message: Optional[StoredMessage] = None, locale: str = "en-US",
                        age: float = 0.0, parent: Optional[FakeInteraction] = None) -> FakeInteraction:
        await self.wait_until_ready()
        channel = channel if isinstance(channel, Channel) else self._channel(channel)
        guild = self._guild_of(channel)
        member = self._member(user, guild)
        perms = guild.permissions_of(member.id)
        iid = self.snowflake(time.time() - age)
        ix = FakeInteraction(self, iid, secrets.token_urlsafe(48), itype, {}, member.user, channel.id,
                             asyncio.get_running_loop().time() - age, message and message.id, parent and parent.id)
        ix.payload = {
            "id": str(iid), "application_id": str(self.application_id), "type": itype, "token": ix.token,
            "version": 1, "guild_id": str(guild.id), "guild": {"id": str(guild.id), "locale": guild.locale,
                                                                 "features": []},
            "channel_id": str(channel.id), "channel": {**channel.payload(), "permissions": str(perms)},
            "member": {**member.payload(), "permissions": str(perms)}, "locale": locale,
            "guild_locale": guild.locale, "app_permissions": str(guild.permissions_of(self.bot_user.id)),
            "entitlements": [], "entitlement_sku_ids": [], "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0, "attachment_size_limit": self.attachment_size_limit, "data": data,
        }
        if message is not None:
            ix.payload["message"] = copy.deepcopy(message.payload)
        self.interactions[iid] = ix
        await self.dispatch("INTERACTION_CREATE", ix.payload)
        return ix

    def _find_command(self, name: str, channel: Channel | int, member: Member) -> tuple[dict, list[str]]:
        channel = channel if isinstance(channel, Channel) else self._channel(channel)
        root, *path = name.split()
        cmd = self.command(root, channel.guild_id) or self.command(root)
        if cmd is None:
            raise LookupError(f"/{root} is not synced (globally or to guild {channel.guild_id}); synced: "
                              f"{[c['name'] for c in self.global_commands + self.commands(channel.guild_id)]}")
        needed = int(cmd["default_member_permissions"]) if cmd.get("default_member_permissions") else 0
        perms = self._guild_of(channel).permissions_of(member.id)
        if perms & needed != needed:
            raise PermissionError(f"Discord hides /{root} from {member.user.username} (missing permissions)")
        if cmd.get("contexts") is not None and 0 not in cmd["contexts"]:
            raise PermissionError(f"/{root} is not available in guilds (contexts={cmd['contexts']})")
        return cmd, path

    def _command_options(self, cmd: dict, path: list[str], values: dict, channel: Channel,
                         focused: Optional[str] = None) -> tuple[list[dict], dict]:
        """Build ``data.options`` (+ ``resolved``) for ``values``, checked against the synced
        definition: names, required options, types, choices, ranges, lengths."""
        defs, resolved = cmd.get("options") or [], {}
        wrappers: list[dict] = []
        for sub in path:
            d = next((o for o in defs if o["name"] == sub and o["type"] in (1, 2)), None)
            if d is None:
                raise ValueError(f"/{cmd['name']} has no subcommand {sub!r}")
            wrappers.append({"type": d["type"], "name": sub})
            defs = d.get("options") or []
        if any(o["type"] in (1, 2) for o in defs):
            raise ValueError(f"/{cmd['name']} needs a subcommand: {[o['name'] for o in defs]}")
        unknown = set(values) - {o["name"] for o in defs}
        if unknown:
            raise ValueError(f"/{cmd['name']}: unknown option(s) {sorted(unknown)}")
        options = []
        for d in defs:
            if d["name"] not in values:
                if d.get("required") and focused is None:
                    raise ValueError(f"/{cmd['name']}: required option {d['name']!r} missing")
                continue
            if d["name"] == focused:
                if not d.get("autocomplete"):
                    raise ValueError(f"option {focused!r} does not have autocomplete")
                options.append({"type": d["type"], "name": d["name"], "value": str(values[focused]), "focused": True})
                continue
            options.append({"type": d["type"], "name": d["name"],
                            "value": self._option_value(d, values[d["name"]], channel, resolved)})
        for wrapper in reversed(wrappers):
            wrapper["options"] = options
            options = [wrapper]
        return options, resolved

    def _option_value(self, d: dict, value: Any, channel: Channel, resolved: dict) -> Any:
        t, name, guild = d["type"], d["name"], self._guild_of(channel)
        kinds = {3: str, 4: int, 5: bool, 10: (int, float)}
        if t in kinds:
            if not isinstance(value, kinds[t]) or (t in (4, 10) and isinstance(value, bool)):
                raise TypeError(f"option {name!r} wants type {t}, got {value!r}")
            if d.get("choices") and value not in [c["value"] for c in d["choices"]]:
                raise ValueError(f"option {name!r}: {value!r} is not one of the choices")
            if t == 3 and not d.get("min_length", 0) <= len(value) <= d.get("max_length", 6000):
                raise ValueError(f"option {name!r}: length out of range")
            if t in (4, 10) and not d.get("min_value", -2 ** 53) <= value <= d.get("max_value", 2 ** 53):
                raise ValueError(f"option {name!r}: {value} out of range")
            return value
        if t == 11:
            data, filename, ctype = value if isinstance(value, tuple) else (value, "file.bin", None)
            f = StoredFile(filename, ctype or mimetypes.guess_type(filename)[0] or "application/octet-stream", data)
            att = self._store_file(channel.id, f, ephemeral=True)
            resolved.setdefault("attachments", {})[att["id"]] = att
            return att["id"]
        if t in (6, 9) and isinstance(value, (User, Member)):
            member = guild.members.get(value.id)
            resolved.setdefault("users", {})[str(value.id)] = self.users[value.id].payload()
            if member is not None:
                resolved.setdefault("members", {})[str(value.id)] = {
                    **member.payload(with_user=False), "permissions": str(guild.permissions_of(value.id))}
            return str(value.id)
        if t in (8, 9) and isinstance(value, Role):
            resolved.setdefault("roles", {})[str(value.id)] = value.payload()
            return str(value.id)
        if t == 7 and isinstance(value, Channel):
            if d.get("channel_types") and value.type not in d["channel_types"]:
                raise ValueError(f"option {name!r}: channel type {value.type} not allowed")
            resolved.setdefault("channels", {})[str(value.id)] = {
                **{k: v for k, v in value.payload().items() if k in ("id", "name", "type", "parent_id", "flags",
                                                                     "guild_id", "position", "topic", "nsfw")},
                "permissions": str(guild.permissions_of(self.bot_user.id))}
            return str(value.id)
        raise TypeError(f"option {name!r} (type {t}) cannot take {value!r}")

    async def slash_command(self, user: User | Member, channel: Channel | int, name: str,
                            options: Optional[dict] = None, *, attachments: Optional[dict] = None,
                            locale: str = "en-US", age: float = 0.0) -> FakeInteraction:
        """Run ``/name`` (``"group sub"`` for subcommands) as ``user``.  ``attachments`` maps
        option names to ``(bytes, filename, content_type)``.  ``age`` back-dates the interaction
        (seconds) to test the 3 s acknowledgement rule.  Raises if the command is not synced
        or the options do not fit its synced definition."""
        channel = channel if isinstance(channel, Channel) else self._channel(channel)
        member = self._member(user, self._guild_of(channel))
        cmd, path = self._find_command(name, channel, member)
        opts, resolved = self._command_options(cmd, path, {**(options or {}), **(attachments or {})}, channel)
        data = {"id": cmd["id"], "name": cmd["name"], "type": 1}
        if opts:
            data["options"] = opts
        if resolved:
            data["resolved"] = resolved
        if cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        return await self._interact(2, member, channel, data, locale=locale, age=age)

    async def autocomplete(self, user: User | Member, channel: Channel | int, name: str, options: dict, *,
                           focused: str, locale: str = "en-US", timeout: float = 3.0) -> list[dict]:
        """Type into option ``focused`` of ``/name``; return the choices the bot answered."""
        channel = channel if isinstance(channel, Channel) else self._channel(channel)
        member = self._member(user, self._guild_of(channel))
        cmd, path = self._find_command(name, channel, member)
        opts, resolved = self._command_options(cmd, path, options, channel, focused=focused)
        data = {"id": cmd["id"], "name": cmd["name"], "type": 1, "options": opts}
        if cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        ix = await self._interact(4, member, channel, data, locale=locale)
        await ix.wait_response(timeout)
        return ix.choices

    def _component_message(self, message: StoredMessage | int, custom_id: str, ctype: int) -> tuple[StoredMessage, dict]:
        msg = message if isinstance(message, StoredMessage) else self.messages[message]
        msg = self.messages[msg.id]
        comp = msg.component(custom_id)
        if msg.deleted or comp is None or comp["type"] != ctype:
            raise LookupError(f"message {msg.id} has no component type {ctype} with custom_id {custom_id!r}; "
                              f"it has {[c.get('custom_id') for c in msg.components]}")
        if comp.get("disabled"):
            raise PermissionError(f"component {custom_id!r} is disabled")
        return msg, comp

    async def press_button(self, user: User | Member, message: StoredMessage | int, custom_id: str, *,
                           locale: str = "en-US", age: float = 0.0) -> FakeInteraction:
        """Click the button ``custom_id`` on ``message`` (a MESSAGE_COMPONENT interaction)."""
        msg, comp = self._component_message(message, custom_id, 2)
        return await self._interact(3, user, msg.channel_id, {"custom_id": custom_id, "component_type": 2,
                                                              "id": comp["id"]}, message=msg, locale=locale, age=age)

    async def select(self, user: User | Member, message: StoredMessage | int, custom_id: str, values: list[str],
                     *, locale: str = "en-US", age: float = 0.0) -> FakeInteraction:
        """Pick ``values`` in the string select ``custom_id`` on ``message``."""
        msg, comp = self._component_message(message, custom_id, 3)
        allowed = [o["value"] for o in comp.get("options", [])]
        if not set(values) <= set(allowed) or not comp.get("min_values", 1) <= len(values) <= comp.get("max_values", 1):
            raise ValueError(f"select {custom_id!r}: {values} not allowed (options {allowed})")
        return await self._interact(3, user, msg.channel_id, {"custom_id": custom_id, "component_type": 3,
                                                              "id": comp["id"], "values": list(values)},
                                    message=msg, locale=locale, age=age)

    async def submit_modal(self, user: User | Member, source: FakeInteraction, custom_id: Optional[str],
                           values: dict[str, str], *, locale: str = "en-US", age: float = 0.0) -> FakeInteraction:
        """Fill in (``{text input custom_id: value}``) and submit the modal the bot opened in
        answer to ``source``; ``custom_id``, unless None, must be the modal's."""
        modal = source.modal
        if modal is None:
            raise LookupError(f"interaction {source.id} was not answered with a modal")
        if custom_id is not None and custom_id != modal["custom_id"]:
            raise ValueError(f"modal custom_id is {modal['custom_id']!r}, not {custom_id!r}")
        inputs: dict[str, dict] = {}

        def answer(comp: dict) -> dict:
            if comp["type"] == 1:
                return {"type": 1, "id": comp.get("id", 0), "components": [answer(c) for c in comp["components"]]}
            if comp["type"] == 18:
                return {"type": 18, "id": comp.get("id", 0), "component": answer(comp["component"])}
            if comp["type"] == 4:
                inputs[comp["custom_id"]] = comp
                value = values.get(comp["custom_id"], "")
                if comp.get("required", True) and not value:
                    raise ValueError(f"text input {comp['custom_id']!r} is required")
                if value and not comp.get("min_length", 0) <= len(value) <= comp.get("max_length", 4000):
                    raise ValueError(f"text input {comp['custom_id']!r}: length out of range")
                return {"type": 4, "id": comp.get("id", 0), "custom_id": comp["custom_id"], "value": value}
            return {"type": comp["type"], "id": comp.get("id", 0)}

        counter = itertools.count(1)
        components = [answer(self._normalize_component(c, counter)) for c in modal["components"]]
        if unknown := set(values) - set(inputs):
            raise ValueError(f"modal has no text inputs {sorted(unknown)}")
        msg = self.messages.get(source.source_message_id) if source.source_message_id else None
        return await self._interact(5, user, source.channel_id, {"custom_id": modal["custom_id"],
                                                                 "components": components},
                                    message=msg, locale=locale, age=age, parent=source)

    async def add_reaction(self, user: User | Member, message: StoredMessage | int, emoji: str) -> None:
        """``user`` reacts with ``emoji`` (unicode, or ``name:id`` for a custom emoji)."""
        msg = self.messages[message.id if isinstance(message, StoredMessage) else message]
        await self.wait_until_ready()
        await self._react(self.users[user.id], msg, emoji, add=True)

    async def remove_reaction(self, user: User | Member, message: StoredMessage | int, emoji: str) -> None:
        msg = self.messages[message.id if isinstance(message, StoredMessage) else message]
        await self.wait_until_ready()
        await self._react(self.users[user.id], msg, emoji, add=False)

    async def send_message(self, user: User | Member, channel: Channel | int, content: str) -> StoredMessage:
        """``user`` posts ``content``; the bot sees it without content unless it has the
        MESSAGE_CONTENT intent or is mentioned (as on Discord)."""
        await self.wait_until_ready()
        channel = channel if isinstance(channel, Channel) else self._channel(channel)
        mid = self.snowflake()
        msg = StoredMessage({"id": str(mid), "channel_id": str(channel.id), "guild_id": str(channel.guild_id),
                             "author": self.users[user.id].payload(), "content": content,
                             "timestamp": _iso(time.time()), "edited_timestamp": None, "tts": False,
                             "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [],
                             "embeds": [], "components": [], "pinned": False, "type": 0, "flags": 0},
                            created_at=asyncio.get_running_loop().time())
        self._parse_mentions(msg.payload, None)
        self.messages[mid] = msg
        event = self._event_message(msg)
        mentioned = any(u["id"] == str(self.bot_user.id) for u in event["mentions"])
        if not (self.session and self.session.intents & Intents.MESSAGE_CONTENT) and not mentioned:
            event.update(content="", embeds=[], attachments=[], components=[])
        await self.dispatch("MESSAGE_CREATE", event, intent=Intents.GUILD_MESSAGES)
        self._notify()
        return msg


# --------------------------------------------------------------------------- discord.py glue

@contextlib.asynccontextmanager
async def redirect_discord(server: DiscordServer) -> AsyncIterator[DiscordServer]:
    """Point discord.py's REST base and default gateway at ``server``; restore afterwards."""
    import discord
    import yarl

    old = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = server.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(server.gateway_url)
    try:
        yield server
    finally:
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old


@contextlib.asynccontextmanager
async def running_client(server: DiscordServer, client: Any, token: Optional[str] = None,
                         timeout: float = 5.0) -> AsyncIterator[Any]:
    """Run ``client.start()`` against ``server`` until the client is ready; close it on exit.
    An exception that ends ``start()`` early (e.g. ``LoginFailure``) is raised here."""
    async with redirect_discord(server):
        task = asyncio.create_task(client.start(token or server.token))
        ready = asyncio.create_task(client.wait_until_ready())
        try:
            done, _ = await asyncio.wait({task, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()  # raises what ended the client
                raise RuntimeError("client stopped before it was ready")
            if ready not in done:
                raise TimeoutError("fake Discord: client did not become ready")
            yield client
        finally:
            ready.cancel()
            if not client.is_closed():
                await client.close()
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout)
            if not task.done():
                task.cancel()
