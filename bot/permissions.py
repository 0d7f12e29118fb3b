"""Who may do what on Discord: admins (Manage Server) and moderators (Manage Messages).

Discord's default command permissions hide admin commands from members, but a
server can change those and a crafted interaction skips them, so every admin
command checks here too, before anything is read or written.
"""

from __future__ import annotations

import discord

from bot.errors import refuse


def is_admin(permissions: discord.Permissions | None) -> bool:
    return bool(permissions and (permissions.manage_guild or permissions.administrator))


def is_moderator(permissions: discord.Permissions | None) -> bool:
    return bool(permissions and (permissions.manage_messages or permissions.administrator))


def require_manage_server(interaction: discord.Interaction) -> None:
    """Refuse, privately, a member without Manage Server."""
    if not is_admin(interaction.permissions):
        raise refuse("needs_manage_server")
