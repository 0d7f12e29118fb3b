"""Numbered schema migrations, recorded in the `_migrations` table.

Each migration is a function that takes a sqlite-utils `Database`. They run in
order, each inside its own transaction, and each is recorded once applied, so
opening an old database brings it up to date and opening a current one does
nothing. Never edit a migration that has shipped: add the next number.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Callable

import sqlite_utils

MIGRATIONS: list[tuple[int, str, Callable[[sqlite_utils.Database], None]]] = []


def migration(number: int, name: str):
    def register(fn):
        MIGRATIONS.append((number, name, fn))
        return fn

    return register


@migration(1, "initial schema")
def _initial(db: sqlite_utils.Database) -> None:
    _run_script(
        db,
        """
        CREATE TABLE users (
            id TEXT PRIMARY KEY,            -- Discord user id, or 'local:<name>' for the CLI
            name TEXT,
            created_at REAL NOT NULL,
            last_served INTEGER NOT NULL DEFAULT 0  -- scheduler turn counter (fairness)
        );
        CREATE TABLE servers (
            id TEXT PRIMARY KEY,            -- Discord guild id
            name TEXT,
            created_at REAL NOT NULL
        );
        CREATE TABLE server_settings (
            server_id TEXT NOT NULL REFERENCES servers(id),
            key TEXT NOT NULL,
            value TEXT NOT NULL,            -- JSON
            updated_at REAL NOT NULL,
            PRIMARY KEY (server_id, key)
        );
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id TEXT NOT NULL REFERENCES users(id),
            server_id TEXT REFERENCES servers(id),
            channel_id TEXT,
            source TEXT NOT NULL,           -- 'cli' or 'discord'
            kind TEXT NOT NULL,             -- 'draw', 'vary' or 'stylize'
            generator TEXT NOT NULL,        -- family: 'diffusion', 'gan', 'vae', 'style'
            model TEXT NOT NULL,            -- the model reference as resolved
            model_revision TEXT,            -- hub commit or local fingerprint, set when run
            params TEXT NOT NULL,           -- JSON: every parameter of the request
            seeds TEXT NOT NULL,            -- JSON list: the seed of each image
            batch_key TEXT NOT NULL,        -- jobs with equal keys can run as one batch
            status TEXT NOT NULL,           -- see storage.jobs.JobStatus
            attempts INTEGER NOT NULL DEFAULT 0,
            claim_token TEXT,               -- the attempt that may finish the job
            worker_id TEXT,                 -- host:pid of the worker running it
            lease_until REAL,               -- a running job unheard of past this is abandoned
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            progress_step INTEGER,
            progress_total INTEGER,
            error TEXT,                     -- short, user-readable
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            run_seconds REAL,               -- generation time of the successful attempt
            parent_id INTEGER REFERENCES jobs(id),
            message_id TEXT,                -- the Discord message showing this job
            interaction_token TEXT,         -- to edit the deferred reply (expires in 15 min)
            interaction_at REAL
        );
        CREATE INDEX jobs_queue ON jobs(status, user_id, id);
        CREATE INDEX jobs_user ON jobs(user_id, id);
        CREATE INDEX jobs_message ON jobs(message_id);
        CREATE TABLE images (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id INTEGER NOT NULL REFERENCES jobs(id),
            idx INTEGER NOT NULL,           -- position in the job's batch, from 0
            seed INTEGER NOT NULL,
            path TEXT NOT NULL,             -- relative to the image store root
            sha256 TEXT NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            created_at REAL NOT NULL,
            UNIQUE (job_id, idx)
        );
        CREATE INDEX images_sha ON images(sha256);
        CREATE TABLE queue_counter (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            turn INTEGER NOT NULL
        );
        INSERT INTO queue_counter (id, turn) VALUES (1, 0);
        """
    )


@migration(2, "discord messages and delivery")
def _discord_messages(db: sqlite_utils.Database) -> None:
    _run_script(
        db,
        """
        CREATE TABLE discord_messages (
            message_id TEXT PRIMARY KEY,    -- a Discord message that shows a job
            channel_id TEXT NOT NULL,
            guild_id TEXT,
            job_id INTEGER NOT NULL REFERENCES jobs(id),
            image_idx INTEGER,              -- set when it shows one image of the job
            via TEXT NOT NULL,              -- 'interaction' (edit with the token) or 'channel'
            created_at REAL NOT NULL
        );
        CREATE INDEX discord_messages_job ON discord_messages(job_id);
        ALTER TABLE jobs ADD COLUMN delivered_at REAL;  -- final state shown on Discord
        ALTER TABLE jobs ADD COLUMN locale TEXT;        -- the requester's Discord locale
        """,
    )


@migration(3, "style presets")
def _style_presets(db: sqlite_utils.Database) -> None:
    _run_script(
        db,
        """
        CREATE TABLE style_presets (
            server_id TEXT NOT NULL,        -- a Discord guild id, or '' for operator-wide presets
            name TEXT NOT NULL,
            image_sha TEXT NOT NULL,        -- the style image, in the image store
            created_by TEXT,
            created_at REAL NOT NULL,
            PRIMARY KEY (server_id, name)
        );
        """,
    )


@migration(4, "admin settings: channel overrides, audit, quota index")
def _admin_settings(db: sqlite_utils.Database) -> None:
    _run_script(
        db,
        """
        CREATE TABLE channel_settings (
            server_id TEXT NOT NULL REFERENCES servers(id),
            channel_id TEXT NOT NULL,       -- overrides the server's value in this channel
            key TEXT NOT NULL,
            value TEXT NOT NULL,            -- JSON
            updated_at REAL NOT NULL,
            PRIMARY KEY (server_id, channel_id, key)
        );
        CREATE TABLE settings_audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            server_id TEXT NOT NULL,
            channel_id TEXT,                -- set for a per-channel override
            key TEXT NOT NULL,
            old_value TEXT,                 -- JSON, NULL when it was not set
            new_value TEXT,                 -- JSON, NULL when it was reset to the default
            actor TEXT NOT NULL,            -- Discord user id, or 'local:<name>' for the CLI
            via TEXT NOT NULL,              -- 'discord' or 'cli'
            created_at REAL NOT NULL
        );
        CREATE INDEX settings_audit_server ON settings_audit(server_id, id);
        -- Quota and cooldown count a user's jobs in one server since a time.
        CREATE INDEX jobs_server_user ON jobs(server_id, user_id, created_at);
        """,
    )


@migration(5, "workers: which worker processes serve this database")
def _workers(db: sqlite_utils.Database) -> None:
    _run_script(
        db,
        """
        CREATE TABLE workers (
            id TEXT PRIMARY KEY,            -- host:pid, as jobs.worker_id
            started_at REAL NOT NULL,
            seen_at REAL NOT NULL           -- renewed while it runs; the row goes when it stops
        );
        """,
    )


@migration(6, "workers.models: the models each worker has loaded")
def _worker_models(db: sqlite_utils.Database) -> None:
    _run_script(
        db,
        """
        -- A JSON list of the model references the worker holds in memory now.
        ALTER TABLE workers ADD COLUMN models TEXT NOT NULL DEFAULT '[]';
        """,
    )


def _run_script(db: sqlite_utils.Database, script: str) -> None:
    """Run several statements inside the caller's transaction.

    (sqlite3's executescript() would commit first, which breaks the
    one-transaction-per-migration rule.)
    """
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            db.conn.execute(statement)
            statement = ""
    if statement.strip():
        raise ValueError(f"incomplete SQL statement in migration: {statement!r}")


def applied(db: sqlite_utils.Database) -> list[int]:
    if "_migrations" not in db.table_names():
        return []
    return [row[0] for row in db.execute("SELECT id FROM _migrations ORDER BY id")]



@migration(7, "workers.info: device, memory, jobs done and current jobs of each worker")
def _worker_info(db: sqlite_utils.Database) -> None:
    _run_script(
        db,
        """
        -- A JSON object the worker (or, for a remote worker, the dispatcher) reports:
        -- where it runs, its device and memory, what it serves, jobs done, current jobs.
        ALTER TABLE workers ADD COLUMN info TEXT NOT NULL DEFAULT '{}';
        """,
    )


@migration(8, "jobs.relax: fast and relax time")
def _relax(db: sqlite_utils.Database) -> None:
    _run_script(
        db,
        """
        -- 1: queued in relax time (the member was past their daily fast images); such a
        -- job runs only when no fast job (0) that the worker can run waits. Old jobs: fast.
        ALTER TABLE jobs ADD COLUMN relax INTEGER NOT NULL DEFAULT 0;
        -- claim: each user's oldest queued job per time, fast ones first.
        CREATE INDEX jobs_queue_relax ON jobs(status, relax, user_id, id);
        """,
    )


@migration(9, "images.lost_at: images whose file `artbot doctor --repair` found gone")
def _lost_images(db: sqlite_utils.Database) -> None:
    _run_script(
        db,
        """
        -- When `artbot doctor --repair` found the file missing or its bytes changed; NULL
        -- for an image that is there. The row stays: its seed and parameters still are.
        ALTER TABLE images ADD COLUMN lost_at REAL;
        """,
    )


@migration(10, "privacy: usage kept from deleted jobs; indexes for deleting a member's data")
def _privacy(db: sqlite_utils.Database) -> None:
    _run_script(
        db,
        """
        -- What the quota and the cooldown still need of a job that `forget` or a server's
        -- retention deleted: when it was queued and how many images counted. No prompt,
        -- no image; a row is removed once it is older than any quota day (two days).
        CREATE TABLE usage_kept (
            server_id TEXT,                 -- NULL: a job of no server (the CLI)
            user_id TEXT NOT NULL,
            created_at REAL NOT NULL,       -- when the deleted job was queued
            images INTEGER NOT NULL,        -- images it counted against the quota (0: none)
            relax INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX usage_kept_user ON usage_kept(server_id, user_id, created_at);
        -- Retention: a server's jobs older than a time. Deleting a job: the jobs made from it.
        CREATE INDEX jobs_server_created ON jobs(server_id, created_at);
        CREATE INDEX jobs_parent ON jobs(parent_id);
        """,
    )


def migrate(db: sqlite_utils.Database) -> list[int]:
    """Apply every migration not yet recorded; return the numbers applied."""
    conn = db.conn
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    done = set(applied(db))
    ran = []
    for number, name, fn in sorted(MIGRATIONS, key=lambda m: m[0]):
        if number in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the lock.
            if conn.execute("SELECT 1 FROM _migrations WHERE id = ?", (number,)).fetchone():
                conn.execute("COMMIT")
                continue
            fn(db)
            conn.execute(
                "INSERT INTO _migrations (id, name, applied_at) VALUES (?, ?, ?)",
                (number, name, time.time()),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        ran.append(number)
    return ran
