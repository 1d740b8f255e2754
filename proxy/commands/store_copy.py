"""`xoauth2-proxy store copy --to postgresql|files`: moving the accounts between the files
under [store] path and the database [store] dsn names, sealed as they are (no password is
asked or needed, and the database never sees a clear token)."""

from __future__ import annotations

from typing import TextIO

from ..config import Config
from ..store import FileStore, Store, open_database
from . import EXIT_FAILED, EXIT_OK


def store_copy(config: Config, to: str, out: TextIO) -> int:
    settings = config.store_config
    files: Store = FileStore(settings.path)
    database = open_database(settings)
    source, target = (files, database) if to == "postgresql" else (database, files)
    try:
        records = source.records()
        kept = 0
        for record in records:
            name = record.meta.username
            if target.put_record(record):
                kept += 1
                out.write(f"{name}: copied to {target.location(name)}\n")
            else:
                out.write(f"{name}: already in {target.location(name)}; left as it is\n")
    finally:
        database.close()
    out.write(f"{kept} of {len(records)} account(s) copied; local passwords are unchanged\n")
    return EXIT_OK if kept == len(records) else EXIT_FAILED
