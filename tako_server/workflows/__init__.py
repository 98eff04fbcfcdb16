"""Workflows: worker groups, the durable job queue and its HTTP API, cron schedules.

See docs/workflows.md. Pure parts: :mod:`.policy` (retry backoff, lease times, the
scale-to-zero decision) and :mod:`tako_common.cron`; I/O: :mod:`.store` (SQLite),
:mod:`.pgstore` (PostgreSQL), :mod:`.api` (loopback HTTP), :mod:`.workers` (processes),
:mod:`.service` (ties them together for the daemon).
"""
