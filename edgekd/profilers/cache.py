"""Persistent measurement cache: identical model bytes profiled on the same target, runtime
(and version), precision, input shape, threads and method are measured once.

SQLite, one table; the key is a SHA-256 over the model bytes' hash and those conditions.
A hit comes back with `measured` figures relabelled `cached` (predicted ones stay predicted)
and `cached_from` set to when the measurement was made."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

from .measurement import Measurement
from .settings import ProfileSettings


def default_cache_dir() -> Path:
    """EDGEKD_CACHE_DIR, else $XDG_CACHE_HOME/edgekd, else ~/.cache/edgekd."""
    if os.environ.get("EDGEKD_CACHE_DIR"):
        return Path(os.environ["EDGEKD_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edgekd"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    files = [path]
    weights = path.with_suffix(".bin")
    if path.suffix == ".xml" and weights.exists():  # OpenVINO IR: the weights are model bytes too
        files.append(weights)
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    digest: str
    conditions: str  # the JSON the digest was taken of, stored for inspection


class MeasurementCache:
    """A cache file that is not a readable SQLite database (a crash, a disk error, a stray file)
    is moved aside to NAME.corrupt-TIMESTAMP and rebuilt; `recovered` says where it went."""

    def __init__(self, path: Path | None = None):
        self.path = path or default_cache_dir() / "measurements.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.recovered: Path | None = None
        try:
            self._create()
            with self._connect() as db:
                db.execute("SELECT key, created, conditions, measurement FROM measurements LIMIT 1").fetchall()
        except sqlite3.DatabaseError:
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            self.recovered = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
            self.path.replace(self.recovered)
            self._create()
            print(f"warning: the measurement cache {self.path} was unreadable; moved it to {self.recovered.name} and "
                  "started a new one (figures will be measured again)", file=sys.stderr)

    def _create(self) -> None:
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS measurements ("
                       "key TEXT PRIMARY KEY, created TEXT NOT NULL, conditions TEXT NOT NULL, "
                       "measurement TEXT NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    @staticmethod
    def conditions(model_path: Path, target: str, runtime: str, runtime_version: str,
                   input_shape: list[int], settings: ProfileSettings, extra: dict | None = None) -> dict:
        return {"model_sha256": file_sha256(model_path), "target": target, "runtime": runtime,
                "runtime_version": runtime_version, "input_shape": list(input_shape), **settings.cache_fields(),
                **(extra or {})}

    def key(self, model_path: Path, target: str, runtime: str, runtime_version: str,
            input_shape: list[int], settings: ProfileSettings, extra: dict | None = None) -> CacheKey:
        cond = json.dumps(self.conditions(model_path, target, runtime, runtime_version, input_shape, settings, extra),
                          sort_keys=True)
        return CacheKey(hashlib.sha256(cond.encode()).hexdigest(), cond)

    def get(self, key: CacheKey) -> Measurement | None:
        with self._connect() as db:
            row = db.execute("SELECT created, measurement FROM measurements WHERE key = ?",
                             (key.digest,)).fetchone()
        if row is None:
            return None
        try:
            m = Measurement.model_validate_json(row[1])
        except ValueError:  # a record of an older or damaged cache: measure again
            return None
        source = {k: ("cached" if v in ("measured", "remote") else v) for k, v in m.source.items()}
        return m.model_copy(update={"source": source, "cached_from": row[0]})

    def put(self, key: CacheKey, m: Measurement) -> None:
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?)",
                       (key.digest, now, key.conditions, m.model_dump_json()))

    def __len__(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
