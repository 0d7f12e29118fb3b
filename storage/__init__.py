"""SQLite and files: the durable state of artbot.

`storage.db` opens the database and applies the numbered migrations,
`storage.images` is the content-addressed image store. Nothing here imports
torch or discord.
"""

from storage.db import open_db
from storage.images import ImageStore, StoredImage

__all__ = ["open_db", "ImageStore", "StoredImage"]
