"""The gateway's memory: visualizations and viz server sessions in SQLite.

One file (``state_dir/registry.sqlite``, WAL mode): a gateway that restarts on
the same state_dir keeps every visualization, link and running session.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Session states. "queued"/"starting"/"ready" hold (or will hold) a job.
QUEUED, STARTING, READY, FAILED, STOPPED = "queued", "starting", "ready", "failed", "stopped"
ACTIVE_STATES = (QUEUED, STARTING, READY)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS visualizations (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    data TEXT NOT NULL,
    app TEXT NOT NULL,
    launcher_json TEXT NOT NULL,
    view_json TEXT,
    created_at REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    viz_id TEXT NOT NULL REFERENCES visualizations(id),
    state TEXT NOT NULL,
    job_kind TEXT NOT NULL,
    job_id TEXT,
    host TEXT,
    port INTEGER,
    secret TEXT NOT NULL,
    created_at REAL NOT NULL,
    ready_at REAL,
    last_activity REAL,
    reason TEXT NOT NULL DEFAULT '',
    log_tail TEXT NOT NULL DEFAULT '',
    ask_restart INTEGER NOT NULL DEFAULT 0,
    user TEXT
);
CREATE INDEX IF NOT EXISTS sessions_by_viz ON sessions(viz_id, created_at);
CREATE INDEX IF NOT EXISTS sessions_by_state ON sessions(state);
CREATE TABLE IF NOT EXISTS gateway (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Columns added after the first release: (name, definition) for ALTER TABLE on older files.
_ADDED_COLUMNS = [("ask_restart", "INTEGER NOT NULL DEFAULT 0"), ("user", "TEXT")]


@dataclass
class Visualization:
    """A registered dataset + app, reachable through signed links."""

    id: str
    title: str
    data: str
    app: str
    launcher: dict[str, Any]
    view: dict[str, Any] | None
    created_at: float
    revoked: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what the REST API returns)."""
        return asdict(self)


@dataclass
class Session:
    """One viz server job serving one visualization."""

    id: str
    viz_id: str
    state: str
    job_kind: str
    job_id: str | None
    host: str | None
    port: int | None
    secret: str
    created_at: float
    ready_at: float | None
    last_activity: float | None
    reason: str
    log_tail: str
    # Ended in a way the user should see (e.g. the maximum lifetime): the next
    # page visit shows the reason and "Start again" instead of relaunching at once.
    ask_restart: bool = False
    # Single sign-on: the user who started it (only they reach it); None without SSO.
    user: str | None = None

    def __post_init__(self) -> None:
        self.ask_restart = bool(self.ask_restart)

    @property
    def active(self) -> bool:
        """Queued, starting or ready: a job is (or will be) there."""
        return self.state in ACTIVE_STATES

    def to_public(self) -> dict[str, Any]:
        """JSON-able form without the backend key."""
        data = asdict(self)
        data.pop("secret")
        return data


class Registry:
    """Visualizations and sessions, stored in one SQLite file.

    Example:
        >>> reg = Registry("/tmp/hpcviz-doc/registry.sqlite")
        >>> viz = reg.add_visualization(data="/data/run1", app="explorer", title="run 1",
        ...                             launcher={"kind": "local", "options": {}})
        >>> reg.get_visualization(viz.id).title
        'run 1'
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._visualizations: dict[str, Visualization] = {}
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        have = {row["name"] for row in self._db.execute("PRAGMA table_info(sessions)")}
        for name, definition in _ADDED_COLUMNS:
            if name not in have:
                self._db.execute(f"ALTER TABLE sessions ADD COLUMN {name} {definition}")
        self._db.execute("INSERT OR IGNORE INTO gateway (key, value) VALUES ('id', ?)", (secrets.token_hex(6),))
        self.gateway_id: str = self._db.execute("SELECT value FROM gateway WHERE key = 'id'").fetchone()["value"]
        """This gateway's tag, made once and kept in the file, so a restart keeps it (backends mark jobs with it)."""
        self.path.chmod(0o600)

    def close(self) -> None:
        """Close the database (the file stays)."""
        with self._lock:
            self._db.close()

    def _exec(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ---------------------------------------------------------- visualizations
    def add_visualization(
        self,
        *,
        data: str,
        app: str,
        title: str,
        launcher: dict[str, Any],
        view: dict[str, Any] | None = None,
    ) -> Visualization:
        """Store a new visualization and return it (with a fresh random id)."""
        viz = Visualization(
            id=secrets.token_urlsafe(12),
            title=title,
            data=data,
            app=app,
            launcher=launcher,
            view=view,
            created_at=time.time(),
            revoked=False,
        )
        self._exec(
            "INSERT INTO visualizations VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
            (viz.id, title, data, app, json.dumps(launcher), json.dumps(view), viz.created_at),
        )
        self._visualizations[viz.id] = viz
        return viz

    def get_visualization(self, viz_id: str) -> Visualization | None:
        """The visualization with this id, or None.

        Every proxied request asks, so visualizations are kept in memory once
        read; :meth:`revoke` drops its entry before it returns.
        """
        viz = self._visualizations.get(viz_id)
        if viz is None:
            rows = self._exec("SELECT * FROM visualizations WHERE id = ?", (viz_id,))
            if not rows:
                return None
            viz = self._visualizations[viz_id] = _viz(rows[0])
        return viz

    def list_visualizations(self) -> list[Visualization]:
        """All visualizations, newest first."""
        return [_viz(r) for r in self._exec("SELECT * FROM visualizations ORDER BY created_at DESC")]

    def revoke(self, viz_id: str) -> bool:
        """Mark a visualization revoked (its links and cookies stop working)."""
        with self._lock:
            cur = self._db.execute("UPDATE visualizations SET revoked = 1 WHERE id = ?", (viz_id,))
            self._visualizations.pop(viz_id, None)
            return cur.rowcount > 0

    # ---------------------------------------------------------------- sessions
    def add_session(self, viz_id: str, job_kind: str, state: str = QUEUED, user: str | None = None) -> Session:
        """A new session with a fresh backend key (``user``: who started it, under single sign-on)."""
        now = time.time()
        session = Session(
            id=secrets.token_urlsafe(12),
            viz_id=viz_id,
            state=state,
            job_kind=job_kind,
            job_id=None,
            host=None,
            port=None,
            secret=secrets.token_urlsafe(32),
            created_at=now,
            ready_at=None,
            last_activity=now,
            reason="",
            log_tail="",
            user=user,
        )
        row = asdict(session)
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self._exec(f"INSERT INTO sessions ({cols}) VALUES ({marks})", tuple(row.values()))
        return session

    def get_session(self, session_id: str) -> Session | None:
        """The session with this id, or None."""
        rows = self._exec("SELECT * FROM sessions WHERE id = ?", (session_id,))
        return Session(**dict(rows[0])) if rows else None

    def latest_session(self, viz_id: str) -> Session | None:
        """The newest session of a visualization, or None."""
        rows = self._exec(
            "SELECT * FROM sessions WHERE viz_id = ? ORDER BY created_at DESC, rowid DESC LIMIT 1", (viz_id,)
        )
        return Session(**dict(rows[0])) if rows else None

    def active_sessions(self) -> list[Session]:
        """Every queued, starting or ready session."""
        marks = ", ".join("?" for _ in ACTIVE_STATES)
        rows = self._exec(f"SELECT * FROM sessions WHERE state IN ({marks})", ACTIVE_STATES)
        return [Session(**dict(r)) for r in rows]

    _UPDATABLE = {
        "state", "job_id", "host", "port", "ready_at", "last_activity", "reason", "log_tail", "ask_restart",
    }  # fmt: skip

    def count_sessions(self, states: tuple[str, ...] = (*ACTIVE_STATES, FAILED, STOPPED)) -> dict[str, int]:
        """``{state: number of sessions}`` for these states (0 where none); one indexed query.

        Raises sqlite3.Error when the database cannot be read (``/healthz`` reports that).

        Example:
            >>> Registry("/tmp/hpcviz-doc/registry.sqlite").count_sessions(("ready",))
            {'ready': 0}
        """
        marks = ", ".join("?" for _ in states)
        rows = self._exec(
            f"SELECT state, COUNT(*) FROM sessions WHERE state IN ({marks}) GROUP BY state", tuple(states)
        )
        counts = dict.fromkeys(states, 0)
        counts.update((row[0], row[1]) for row in rows)
        return counts

    def update_session(self, session_id: str, **fields: Any) -> Session | None:
        """Change some fields of a session; return the session as stored now."""
        bad = set(fields) - self._UPDATABLE
        if bad:
            raise ValueError(f"cannot update session fields {sorted(bad)}")
        if fields:
            sets = ", ".join(f"{name} = ?" for name in fields)
            self._exec(f"UPDATE sessions SET {sets} WHERE id = ?", (*fields.values(), session_id))
        return self.get_session(session_id)

    def record_activity(self, activity: dict[str, float]) -> None:
        """Store last-activity times (session id -> epoch seconds) in one transaction."""
        if not activity:
            return
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "UPDATE sessions SET last_activity = MAX(COALESCE(last_activity, 0), ?) WHERE id = ?",
                    [(ts, sid) for sid, ts in activity.items()],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise


def _viz(row: sqlite3.Row) -> Visualization:
    return Visualization(
        id=row["id"],
        title=row["title"],
        data=row["data"],
        app=row["app"],
        launcher=json.loads(row["launcher_json"]),
        view=json.loads(row["view_json"]) if row["view_json"] else None,
        created_at=row["created_at"],
        revoked=bool(row["revoked"]),
    )
