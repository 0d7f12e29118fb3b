"""The operator's side of the rules: `artbot settings` for a Discord server, and
`artbot preset` for the style presets every server sees."""

from __future__ import annotations

from artbot.config import Settings
from artbot.errors import InvalidRequest
from cli.connect import run_on_queue
from cli.listing import when
from cli.requests import InputImage, local_user
from cli.terminal import safe
from storage.images import ImageStore
from storage.settings import AuditEntry
from worker.requests import check_preset_name
from worker.server_settings import KEYS, format_value, key_of


def cmd_settings(settings: Settings, args) -> int:
    """`artbot settings show|set|unset|audit GUILD ...`: a server's rules, for the operator."""
    server = args.guild
    if not server.isdigit():
        raise InvalidRequest(f"GUILD is a Discord server id (digits), not {server!r}.")
    channel = args.channel
    if channel is not None and not channel.isdigit():
        raise InvalidRequest(f"--channel takes a channel id (digits), not {channel!r}.")
    if args.action in ("set", "unset"):
        if not args.key or (args.action == "set" and args.value is None):
            raise InvalidRequest(f"settings {args.action} needs GUILD KEY"
                                 + (" VALUE." if args.action == "set" else "."))
        key = key_of(args.key).name

        async def change(queue):
            changed = await queue.change_setting(
                settings, server, key, args.value if args.action == "set" else None,
                actor=local_user(), via="cli", channel_id=channel)
            return changed, (await queue.rules(settings, server, channel))[key]

        changed, value = run_on_queue(settings, change)
        where = f"channel {channel}" if channel else f"server {server}"
        if changed is None:
            print(f"{key} unchanged for {where}")
        else:
            print(f"{key} = {format_value(key, value)} for {where}")
        return 0
    if args.action == "audit":
        entries = run_on_queue(settings, lambda queue: queue.audit(server, limit=args.limit))
        if not entries:
            print(f"No changes recorded for server {server}.")
        for e in entries:
            print(audit_line(e))
        return 0

    async def show(queue):
        return (await queue.rules(settings, server, channel),
                await queue.channel_overrides(server), await queue.audit(server, limit=5))

    policy, overrides, entries = run_on_queue(settings, show)
    print(f"server {server}" + (f", channel {channel}" if channel else ""))
    for name in KEYS:
        print(safe(f"  {name:17} {format_value(name, policy[name]):30} ({policy.source(name)})"))
    if not channel:
        for channel_id, values in overrides.items():
            shown = ", ".join(f"{k}={format_value(k, v)}" for k, v in values.items())
            print(safe(f"  channel {channel_id}: {shown}"))
    if entries:
        print("recent changes:")
        for e in entries:
            print("  " + audit_line(e))
    return 0


def audit_line(entry: AuditEntry) -> str:
    def shown(value):
        return "(default)" if value is None else format_value(entry.key, value)

    where = f" in channel {entry.channel_id}" if entry.channel_id else ""
    return safe(f"{when(entry.created_at)}  {entry.actor} ({entry.via})  {entry.key}{where}: "
                f"{shown(entry.old_value)} -> {shown(entry.new_value)}")


def cmd_preset(settings: Settings, args) -> int:
    if args.action == "list":
        presets = run_on_queue(settings, lambda queue: queue.presets(None))
        if not presets:
            print("No presets. Add one: artbot preset add NAME IMAGE")
        for p in presets:
            print(f"{safe(p.name):24} {p.image_sha[:12]}  {when(p.created_at)}")
        return 0
    if not args.name:
        raise InvalidRequest(f"preset {args.action} needs a NAME.")
    if args.action == "add":
        if not args.image:
            raise InvalidRequest("preset add needs NAME and IMAGE.")
        name = check_preset_name(args.name)  # control characters out, something visible in it
        image = InputImage(args.image, "Style image")
        image.store(ImageStore(settings.image_dir))
        run_on_queue(settings, lambda queue: queue.save_preset(None, name, image.sha256,
                                                              local_user()))
        print(f"preset {name} saved")
        return 0
    if not run_on_queue(settings, lambda queue: queue.delete_preset(None, args.name)):
        raise InvalidRequest(f"There is no operator-wide preset {args.name!r}.")
    print(f"preset {args.name} removed")
    return 0
