"""Backups of each app's persistent data to private S3-compatible storage.

- :mod:`.retention` (pure): which backups to keep (7 daily, 4 weekly by default) and
  when the next scheduled one is due;
- :mod:`.pack`: the archive of ``apps/{app}/{env}/data`` (SQLite databases copied with
  SQLite's online backup API), compressed and encrypted (:mod:`tako_common.backup_archive`),
  and its way back into a staging directory for a restore;
- :mod:`.bucket`: the S3 client (the maintained ``minio`` library; no hand-written
  signing), every failure translated into a :class:`~.bucket.BackupError` that says why;
- :mod:`.service`: ``BackupService``: take, list, fetch and restore backups, the run
  history in the state database, and the scheduler task.
"""
