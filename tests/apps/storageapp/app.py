"""A test app for storages and backups: a note in its ``local`` storage, rows in an SQLite
database in ``TAKO_DATA_DIR`` (WAL mode, a connection kept open as a real app would), and
an object put to and read back from its S3 binding with the values the server gave it.

No Tako SDK: only environment variables. The S3 client is ``minio`` (any S3 client works);
the test CA comes from the ``S3_CA`` variable of tako.toml.
"""

import io
import json
import os
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

LOCK = threading.Lock()
DB: sqlite3.Connection | None = None


def db() -> sqlite3.Connection:
    global DB
    if DB is None:
        DB = sqlite3.connect(Path(os.environ["TAKO_DATA_DIR"]) / "app.db", check_same_thread=False)
        DB.execute("PRAGMA journal_mode=WAL")
        DB.execute("CREATE TABLE IF NOT EXISTS rows (text TEXT)")
        DB.commit()
    return DB


def note_path() -> Path:
    return Path(os.environ["TAKO_STORAGE_FILES_PATH"]) / "note.txt"


def s3_round_trip(key: str, value: str) -> str:
    import urllib3
    from minio import Minio

    def var(name: str) -> str:
        return os.environ[f"TAKO_STORAGE_MEDIA_{name}"]

    http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=os.environ["S3_CA"])
    client = Minio(
        var("ENDPOINT").removeprefix("https://"),
        access_key=var("ACCESS_KEY_ID"),
        secret_key=var("SECRET_ACCESS_KEY"),
        region=var("REGION"),
        secure=True,
        http_client=http,
    )
    data = value.encode()
    client.put_object(var("BUCKET"), key, io.BytesIO(data), len(data))
    response = client.get_object(var("BUCKET"), key)
    try:
        return response.read().decode()
    finally:
        response.close()
        response.release_conn()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with LOCK:
            body = self.answer(url.path, query)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def answer(self, path: str, query: dict[str, str]) -> bytes:
        if path == "/write":
            note_path().write_text(query["text"])
            db().execute("INSERT INTO rows VALUES (?)", (query["text"],))
            db().commit()
            return b'"written"'
        if path == "/read":
            global DB
            if DB is not None:  # a restore replaced the file: open it again
                DB.close()
                DB = None
            note = note_path().read_text() if note_path().exists() else None
            rows = [r[0] for r in db().execute("SELECT text FROM rows ORDER BY rowid")]
            return json.dumps({"note": note, "rows": rows}).encode()
        if path == "/s3":
            return json.dumps(s3_round_trip(query["key"], query["value"])).encode()
        if path == "/env":
            names = sorted(k for k in os.environ if k.startswith("TAKO_"))
            return json.dumps({k: os.environ[k] for k in names if "SECRET" not in k}).encode()
        return b'"ok"'

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


if __name__ == "__main__":
    address = (os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "3000")))
    ThreadingHTTPServer(address, Handler).serve_forever()
