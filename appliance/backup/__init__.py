"""Backups of an appliance: one archive, restorable onto a fresh install (issue 14).

``tidings backup`` writes a gzip-compressed tar, 0600 (it holds keys):

- ``MANIFEST.json`` first: format, tidings and schema version, backend,
  creation time, and every member's type, mode, owner, size and sha256;
- ``store/tidings.sqlite3`` (SQLite's online backup) or ``store/mariadb.sql``
  (``mariadb-dump --single-transaction``): one consistent moment of the
  store, taken while the server runs;
- ``config/tidings.toml``: the configuration file, if there is one;
- ``data`` and ``data/...``: the data directory's state (certificates and
  keys, ACME account, IP filter lists, the recorded store choice);
- ``media/blobs/ab/cd/<sha256>``: the uploaded files' blobs, copied after the
  store, streamed, last (`appliance.backup.media`); not with ``--no-media``
  nor before an upgrade; unfinished uploads (``media/tmp``) never.

``tidings restore`` checks all of it before writing anything
(`appliance.backup.restore`); ``tidings upgrade`` takes one before it swaps
the executable and restores it on a rollback that needs it.
"""
