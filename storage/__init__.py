"""SQLite and files: the durable state of artbot. Nothing here imports torch or discord.

One module per concept, each a small class over the same sqlite-utils connection:

- `storage.db`: opening the database (numbered `storage.migrations`), transactions;
- `storage.jobs`: the jobs table as a queue (`JobStore`: submit, claim, heartbeat,
  complete, cancel, requeue) and the `Job` and `ImageRecord` records;
- `storage.usage`: what users have used (queue limit, cooldown, quota, /stats);
- `storage.messages`: which chat message shows which job, and delivery;
- `storage.presets`: style presets;
- `storage.settings`: per-server settings, channel overrides and their audit;
- `storage.workers`: which worker processes serve the database;
- `storage.privacy`: deleting a member's data or a server's old results, and
  reading a member's records for an export;
- `storage.images`: the content-addressed image store.
"""

from storage.db import open_db
from storage.images import ImageStore, StoredImage

__all__ = ["open_db", "ImageStore", "StoredImage"]
