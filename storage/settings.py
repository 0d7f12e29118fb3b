"""Per-server settings, per-channel overrides and their audit trail, in SQLite.

    store = SettingsStore(db)
    store.set(server, "daily_quota", 20, actor="1234", via="discord")
    store.values(server)                 # {"daily_quota": 20}
    store.values(server, channel)        # that channel's overrides only
    store.audit(server)                  # newest first: who, what, when, old -> new

Values are JSON. What a key means and which values it takes is decided in
`worker.server_settings`; this module only stores them. Every change and its audit row
are written in one transaction, so the audit can never miss a change. A
change that sets the value a key already has is not recorded at all.

The class works on the caller's connection and does not open transactions of
its own when one is already open, so `worker.gate.admit` can read settings
inside the same `BEGIN IMMEDIATE` that queues a job.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from storage.db import transaction


@dataclass
class AuditEntry:
    id: int
    server_id: str
    channel_id: str | None
    key: str
    old_value: Any  # None: was not set
    new_value: Any  # None: reset to the default
    actor: str
    via: str
    created_at: float


class SettingsStore:
    def __init__(self, db: sqlite_utils.Database):
        self.db = db
        self.conn = db.conn

    # -- reading --------------------------------------------------------------

    def values(self, server_id: str, channel_id: str | None = None) -> dict[str, Any]:
        """The server's own values, or (with `channel_id`) that channel's overrides."""
        if channel_id is None:
            rows = self.conn.execute(
                "SELECT key, value FROM server_settings WHERE server_id = ?", (server_id,))
        else:
            rows = self.conn.execute(
                "SELECT key, value FROM channel_settings WHERE server_id = ? AND channel_id = ?",
                (server_id, channel_id))
        return {key: json.loads(value) for key, value in rows.fetchall()}

    def channel_overrides(self, server_id: str) -> dict[str, dict[str, Any]]:
        """Every channel of the server that overrides something: {channel_id: {key: value}}."""
        out: dict[str, dict[str, Any]] = {}
        for channel_id, key, value in self.conn.execute(
            "SELECT channel_id, key, value FROM channel_settings WHERE server_id = ? "
            "ORDER BY channel_id, key", (server_id,)
        ).fetchall():
            out.setdefault(channel_id, {})[key] = json.loads(value)
        return out

    def audit(self, server_id: str, limit: int = 20) -> list[AuditEntry]:
        cur = self.conn.execute(
            "SELECT * FROM settings_audit WHERE server_id = ? ORDER BY id DESC LIMIT ?",
            (server_id, limit))
        cols = [c[0] for c in cur.description]
        entries = []
        for row in cur.fetchall():
            data = dict(zip(cols, row))
            for k in ("old_value", "new_value"):
                data[k] = None if data[k] is None else json.loads(data[k])
            entries.append(AuditEntry(**data))
        return entries

    # -- writing --------------------------------------------------------------

    def set(self, server_id: str, key: str, value: Any, *, actor: str, via: str,
            channel_id: str | None = None) -> tuple[Any, Any] | None:
        """Set (or, with value None, reset) one key and audit it.

        Returns (old, new), or None when nothing changed.
        """
        with transaction(self.conn):  # joins the caller's transaction if one is open
            return self._set(server_id, key, value, actor=actor, via=via, channel_id=channel_id)

    def _set(self, server_id, key, value, *, actor, via, channel_id):
        now = time.time()
        self.conn.execute("INSERT OR IGNORE INTO servers (id, created_at) VALUES (?, ?)",
                          (server_id, now))
        if channel_id is None:
            table, where, params = "server_settings", "server_id = ? AND key = ?", (server_id, key)
        else:
            table = "channel_settings"
            where, params = "server_id = ? AND channel_id = ? AND key = ?", (server_id, channel_id, key)
        row = self.conn.execute(f"SELECT value FROM {table} WHERE {where}", params).fetchone()
        old = None if row is None else json.loads(row[0])
        if old == value:
            return None
        if value is None:
            self.conn.execute(f"DELETE FROM {table} WHERE {where}", params)
        elif channel_id is None:
            self.conn.execute(
                "INSERT OR REPLACE INTO server_settings (server_id, key, value, updated_at) "
                "VALUES (?, ?, ?, ?)", (server_id, key, json.dumps(value), now))
        else:
            self.conn.execute(
                "INSERT OR REPLACE INTO channel_settings (server_id, channel_id, key, value, "
                "updated_at) VALUES (?, ?, ?, ?, ?)",
                (server_id, channel_id, key, json.dumps(value), now))
        self.conn.execute(
            "INSERT INTO settings_audit (server_id, channel_id, key, old_value, new_value, actor, "
            "via, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (server_id, channel_id, key, None if old is None else json.dumps(old),
             None if value is None else json.dumps(value), actor, via, now))
        return old, value
