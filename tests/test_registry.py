"""The gateway's SQLite registry: what it keeps, and that a restart loses nothing."""

from __future__ import annotations

import sqlite3
import stat

from prefect_hpcviz.viz.gateway.registry import FAILED, QUEUED, READY, STOPPED, Registry

LAUNCHER = {"kind": "local", "options": {"grace_s": 1}}


def test_visualizations_and_sessions_survive_reopening_the_registry(tmp_path):
    path = tmp_path / "registry.sqlite"
    reg = Registry(path)
    viz = reg.add_visualization(
        data="/data/run1", app="explorer", title="run 1", launcher=LAUNCHER, view={"field": "p"}
    )
    session = reg.add_session(viz.id, "local")
    reg.update_session(session.id, state=READY, job_id="123.456", host="127.0.0.1", port=8080)
    reg.close()

    again = Registry(path)
    stored = again.get_visualization(viz.id)
    assert (stored.data, stored.app, stored.title, stored.launcher, stored.view, stored.revoked) == (
        "/data/run1", "explorer", "run 1", LAUNCHER, {"field": "p"}, False,
    )  # fmt: skip
    s = again.get_session(session.id)
    assert (s.state, s.job_id, s.host, s.port, s.secret) == (
        READY,
        "123.456",
        "127.0.0.1",
        8080,
        session.secret,
    )
    assert [a.id for a in again.active_sessions()] == [session.id]
    again.close()


def test_the_registry_file_is_private_and_in_wal_mode(tmp_path):
    path = tmp_path / "registry.sqlite"
    Registry(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_each_session_gets_its_own_strong_key_that_the_public_view_hides(tmp_path):
    reg = Registry(tmp_path / "r.sqlite")
    viz = reg.add_visualization(data="d", app="explorer", title="t", launcher=LAUNCHER)
    a, b = reg.add_session(viz.id, "local"), reg.add_session(viz.id, "local")
    assert a.secret != b.secret and len(a.secret) >= 40
    assert "secret" not in a.to_public() and a.to_public()["state"] == QUEUED


def test_latest_session_and_active_sessions_follow_state_changes(tmp_path):
    reg = Registry(tmp_path / "r.sqlite")
    viz = reg.add_visualization(data="d", app="explorer", title="t", launcher=LAUNCHER)
    first = reg.add_session(viz.id, "local")
    reg.update_session(first.id, state=FAILED, reason="exit code 3", log_tail="boom\n")
    second = reg.add_session(viz.id, "local")
    assert reg.latest_session(viz.id).id == second.id
    assert [s.id for s in reg.active_sessions()] == [second.id]
    reg.update_session(second.id, state=STOPPED)
    assert reg.active_sessions() == []
    assert reg.get_session(first.id).log_tail == "boom\n"


def test_revoking_marks_the_visualization(tmp_path):
    reg = Registry(tmp_path / "r.sqlite")
    viz = reg.add_visualization(data="d", app="explorer", title="t", launcher=LAUNCHER)
    assert reg.revoke(viz.id) is True
    assert reg.get_visualization(viz.id).revoked is True
    assert reg.revoke("nope") is False


def test_activity_only_moves_forward(tmp_path):
    reg = Registry(tmp_path / "r.sqlite")
    viz = reg.add_visualization(data="d", app="explorer", title="t", launcher=LAUNCHER)
    s = reg.add_session(viz.id, "local")
    reg.record_activity({s.id: s.created_at + 100})
    reg.record_activity({s.id: s.created_at + 50})
    assert reg.get_session(s.id).last_activity == s.created_at + 100
