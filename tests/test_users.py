"""People of the web app: roles, argon2 passwords, rate-limited sign-in, server-side sessions,
and ``tuneloop users``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from tests.conftest import CLI
from tests.people import PASSWORD, fast_hashing  # noqa: F401
from tuneloop.errors import NotFound, UserError
from tuneloop.store.db import Store, open_store
from tuneloop.store.models import LoginAttempt, User, WebSession
from tuneloop.workflows.users import (
    MAX_FAILURES,
    TooManyAttempts,
    add_user,
    authenticate,
    create_session,
    end_session,
    list_users,
    session_for,
    set_active,
    set_password,
    set_role,
)


def test_add_hashes_with_argon2id_and_checks_rules(store: Store) -> None:
    info = add_user(store, "Alice", "annotator", PASSWORD)
    assert (info.username, info.role, info.active) == ("alice", "annotator", True)
    with store.transaction() as session:
        digest = session.scalar(select(User.password_hash).where(User.username == "alice"))
    assert digest is not None and digest.startswith("$argon2id$") and PASSWORD not in digest
    for name, role, password, message in (
        ("bob", "annotator", "short", "at least 10"),
        ("bob", "annotator", "x" * 300, "at most 256"),
        ("bobbobbobbob", "annotator", "BobBobBobBob", "must not be the username"),
        ("b", "annotator", PASSWORD, "2-64 characters"),
        ("bob smith", "annotator", PASSWORD, "letters, digits"),
        ("bob", "boss", PASSWORD, "one of admin, reviewer, annotator"),
        ("alice", "annotator", PASSWORD, "exists already"),
    ):
        with pytest.raises(UserError, match=message):
            add_user(store, name, role, password)
    assert [u.username for u in list_users(store)] == ["alice"]


@pytest.mark.usefixtures("fast_hashing")
def test_authenticate_right_wrong_unknown_disabled(store: Store) -> None:
    add_user(store, "alice", "reviewer", PASSWORD)
    actor = authenticate(store, "ALICE ", PASSWORD, "10.0.0.1")
    assert (actor.username, actor.role, actor.can_review, actor.is_admin) == (
        "alice",
        "reviewer",
        True,
        False,
    )
    for name, password in (("alice", "wrong password!"), ("nobody", PASSWORD)):
        with pytest.raises(UserError, match="wrong username or password"):
            authenticate(store, name, password, "10.0.0.1")
    set_active(store, "alice", False)
    with pytest.raises(UserError, match="wrong username or password"):
        authenticate(store, "alice", PASSWORD, "10.0.0.2")
    set_active(store, "alice", True)
    set_password(store, "alice", "another good password")
    with pytest.raises(UserError, match="wrong username or password"):
        authenticate(store, "alice", PASSWORD, "10.0.0.3")
    assert authenticate(store, "alice", "another good password", "10.0.0.3").id == actor.id
    assert set_role(store, "alice", "admin").role == "admin"
    with pytest.raises(NotFound, match="no user 'zed'"):
        set_active(store, "zed", False)


@pytest.mark.usefixtures("fast_hashing")
def test_rate_limit_per_username_and_address(store: Store) -> None:
    add_user(store, "alice", "annotator", PASSWORD)
    for _ in range(MAX_FAILURES):
        with pytest.raises(UserError, match="wrong"):
            authenticate(store, "alice", "not the password", "10.0.0.1")
    with pytest.raises(TooManyAttempts, match="too many failed sign-ins") as err:
        authenticate(store, "alice", PASSWORD, "10.0.0.1")  # even the right password
    assert 0 < err.value.retry_after <= 15 * 60
    assert authenticate(store, "alice", PASSWORD, "10.0.0.9").username == "alice"  # other address
    # once the window has passed, the pair may try again; a success clears its failures
    with store.transaction() as session:
        session.execute(
            update(LoginAttempt).values(created_at=datetime.now(UTC) - timedelta(minutes=16))
        )
    assert authenticate(store, "alice", PASSWORD, "10.0.0.1").username == "alice"
    with store.transaction() as session:
        pair = (LoginAttempt.username == "alice") & (LoginAttempt.ip == "10.0.0.1")
        assert session.scalar(select(func.count()).where(pair)) == 1


@pytest.mark.usefixtures("fast_hashing")
def test_sessions_store_only_a_hash_and_end(store: Store) -> None:
    add_user(store, "alice", "annotator", PASSWORD)
    actor = authenticate(store, "alice", PASSWORD, "127.0.0.1")
    token, info = create_session(store, actor)
    with store.transaction() as session:
        row = session.scalars(select(WebSession)).one()
        assert row.token_hash != token and len(row.token_hash) == 64
    found = session_for(store, token)
    assert found is not None and found.actor == actor and found.csrf_token == info.csrf_token
    assert session_for(store, token + "x") is None
    assert session_for(store, "") is None
    end_session(store, token)
    assert session_for(store, token) is None
    # expired sessions and disabled people's sessions are gone
    token, _ = create_session(store, actor, lifetime=timedelta(seconds=-1))
    assert session_for(store, token) is None
    token, _ = create_session(store, actor)
    set_active(store, "alice", False)
    assert session_for(store, token) is None


@pytest.mark.usefixtures("fast_hashing")
def test_users_cli(cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw.txt"
    secret.write_text(PASSWORD + "\n")
    code, out, err = cli("users", "add", "ada", "--role", "admin", "--password-file", str(secret))
    assert code == 0, err
    assert "added ada (admin)" in out and PASSWORD not in out + err
    monkeypatch.setenv("TUNELOOP_PASSWORD", "from the environment")
    code, out, err = cli("users", "add", "bob")
    assert code == 0 and "added bob (annotator)" in out and "from the environment" not in out
    code, out, err = cli("users", "add", "carol", "--role", "boss")
    assert code == 1 and "role 'boss'" in err
    monkeypatch.setenv("TUNELOOP_PASSWORD", "short")
    code, out, err = cli("users", "add", "dan")
    assert code == 1 and "at least 10 characters" in err
    code, out, _ = cli("users", "disable", "bob")
    assert code == 0 and "disabled bob" in out
    code, out, _ = cli("users", "list", "--json")
    people = {u["username"]: u for u in json.loads(out)}
    assert set(people) == {"ada", "bob"}  # nothing half-written for carol or dan
    assert people["bob"]["active"] is False and people["ada"]["role"] == "admin"
    assert "password" not in out
    code, out, _ = cli("users", "enable", "bob")
    assert code == 0
    code, _, err = cli("users", "disable", "nobody")
    assert code == 1 and "no user 'nobody'" in err
    monkeypatch.delenv("TUNELOOP_PASSWORD")
    code, out, err = cli("users", "password", "bob", "--password-file", str(secret))
    assert code == 0 and PASSWORD not in out
    store = open_store(cli.db_url)
    try:
        assert authenticate(store, "bob", PASSWORD, "1.2.3.4").username == "bob"
    finally:
        store.dispose()
