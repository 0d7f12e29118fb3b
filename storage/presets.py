"""Style presets: named style images for stylize, per server or operator-wide.

A preset is a name and the sha256 of a style image in the image store. The
operator's presets (server '') are seen by every server; a server's own preset
wins when both have the same name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlite_utils

from storage.db import fetch_all, transaction


@dataclass(frozen=True)
class Preset:
    server_id: str  # a Discord guild id, or '' for an operator-wide preset
    name: str
    image_sha: str
    created_by: str | None
    created_at: float


class PresetStore:
    def __init__(self, db: sqlite_utils.Database):
        self.db = db
        self.conn = db.conn

    def save(self, server_id: str | None, name: str, image_sha: str, created_by: str | None) -> None:
        with transaction(self.conn):
            self.conn.execute(
                "INSERT OR REPLACE INTO style_presets (server_id, name, image_sha, created_by, "
                "created_at) VALUES (?, ?, ?, ?, ?)",
                (server_id or "", name, image_sha, created_by, time.time()),
            )

    def list(self, server_id: str | None) -> list[Preset]:
        """A server's presets and the operator-wide ones (a server's own win on a name clash)."""
        rows = fetch_all(
            self.conn,
            "SELECT * FROM style_presets WHERE server_id IN (?, '') ORDER BY name, server_id DESC",
            (server_id or "",),
        )
        seen, out = set(), []
        for row in rows:
            if row["name"] not in seen:
                seen.add(row["name"])
                out.append(Preset(**row))
        return out

    def get(self, server_id: str | None, name: str) -> Preset | None:
        return next((p for p in self.list(server_id) if p.name == name), None)

    def delete(self, server_id: str | None, name: str) -> bool:
        with transaction(self.conn):
            cur = self.conn.execute("DELETE FROM style_presets WHERE server_id = ? AND name = ?",
                                    (server_id or "", name))
        return cur.rowcount == 1
