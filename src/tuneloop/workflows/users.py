"""People who label, rate and review: add, list, disable; sign in with argon2 password hashes
and rate limiting; server-side sessions for the web app, each with its CSRF token.

Reads top to bottom: name and password rules -> add / list / enable-disable / new password /
role -> authenticate (failures per username and client address are counted; too many in the
window lock that pair out for a while; unknown names cost as much time as wrong passwords) ->
sessions (the browser keeps a random token, the table only its sha256).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from tuneloop.errors import NotFound, UserError
from tuneloop.store.db import Store
from tuneloop.store.models import LoginAttempt, User, WebSession

if TYPE_CHECKING:
    from argon2 import PasswordHasher

ROLES = ("admin", "reviewer", "annotator")
USERNAME = re.compile(r"[a-z0-9][a-z0-9_.@-]{1,63}")
MIN_PASSWORD = 10
MAX_PASSWORD = 256
MAX_FAILURES = 5  # failed sign-ins per username and address within the window ...
FAILURE_WINDOW = timedelta(minutes=15)  # ... lock that pair out until the window has passed
SESSION_LIFETIME = timedelta(hours=12)


@dataclass(frozen=True)
class Actor:
    """The person asking: every workflow that reads or writes queues checks their role."""

    id: int
    username: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def can_review(self) -> bool:
        return self.role in ("admin", "reviewer")


@dataclass(frozen=True)
class UserInfo:
    id: int
    username: str
    role: str
    active: bool
    has_password: bool
    created_at: datetime

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "username": self.username,
            "role": self.role,
            "active": self.active,
            "created_at": self.created_at.isoformat(),
        }


class TooManyAttempts(UserError):
    """Sign-in refused for a while after repeated failures (the web app answers 429)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed sign-ins; try again in {retry_after // 60 + 1} minutes")
        self.retry_after = retry_after


def check_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME.fullmatch(name):
        raise UserError(
            f"username {username!r}: 2-64 characters, letters, digits and _ . @ - only, "
            "starting with a letter or digit"
        )
    return name


def check_password(password: str, username: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password for {username!r}: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"password for {username!r}: at most {MAX_PASSWORD} characters")
    if password.strip().lower() == username.lower():
        raise UserError(f"password for {username!r}: must not be the username")


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"role {role!r}: one of {', '.join(ROLES)}")
    return role


@cache
def _hasher() -> PasswordHasher:
    from argon2 import PasswordHasher

    return PasswordHasher()  # argon2id with the library's current recommended parameters


@cache
def _dummy_hash() -> str:
    return _hasher().hash(secrets.token_hex(16))


def _info(user: User) -> UserInfo:
    return UserInfo(
        user.id, user.username, user.role, user.active, bool(user.password_hash), user.created_at
    )


def _get(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username.strip().lower()))
    if user is None:
        raise NotFound(f"no user {username!r} (add one with `tuneloop users add`)")
    return user


def add_user(store: Store, username: str, role: str, password: str) -> UserInfo:
    name = check_username(username)
    check_role(role)
    check_password(password, name)
    digest = _hasher().hash(password)
    with store.transaction() as session:
        if session.scalar(select(User.id).where(User.username == name)) is not None:
            raise UserError(f"user {name!r} exists already")
        user = User(username=name, role=role, password_hash=digest, active=True)
        session.add(user)
        session.flush()
        return _info(user)


def list_users(store: Store) -> list[UserInfo]:
    with store.transaction() as session:
        return [_info(u) for u in session.scalars(select(User).order_by(User.username))]


def set_active(store: Store, username: str, active: bool) -> UserInfo:
    """Enable or disable a person; disabling also ends their sessions (their answers stay)."""
    with store.transaction() as session:
        user = _get(session, username)
        user.active = active
        if not active:
            session.execute(delete(WebSession).where(WebSession.user_id == user.id))
        return _info(user)


def set_password(store: Store, username: str, password: str) -> None:
    """A new password; every session of that person ends."""
    with store.transaction() as session:
        user = _get(session, username)
        check_password(password, user.username)
        user.password_hash = _hasher().hash(password)
        session.execute(delete(WebSession).where(WebSession.user_id == user.id))


def set_role(store: Store, username: str, role: str) -> UserInfo:
    check_role(role)
    with store.transaction() as session:
        user = _get(session, username)
        user.role = role
        return _info(user)


def authenticate(store: Store, username: str, password: str, ip: str) -> Actor:
    """The person with these credentials, else one vague error; rate limited per username and
    client address (``TooManyAttempts``)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    name = username.strip().lower()[:200]
    ip = ip[:64]
    now = datetime.now(UTC)
    since = now - FAILURE_WINDOW
    with store.transaction() as session:
        # attempts older than the window count for nothing: the table stays small
        session.execute(delete(LoginAttempt).where(LoginAttempt.created_at < since))
        failures = session.execute(
            select(func.count(), func.min(LoginAttempt.created_at)).where(
                LoginAttempt.username == name,
                LoginAttempt.ip == ip,
                LoginAttempt.created_at >= since,
                LoginAttempt.ok.is_(False),
            )
        ).one()
        if failures[0] >= MAX_FAILURES:
            oldest = _aware(failures[1])
            raise TooManyAttempts(max(1, int((oldest + FAILURE_WINDOW - now).total_seconds())))
        user = session.scalar(select(User).where(User.username == name))
        digest = user.password_hash if user is not None and user.active else None
        try:
            ok = _hasher().verify(digest or _dummy_hash(), password) and digest is not None
        except (VerificationError, InvalidHashError):
            ok = False
        session.add(LoginAttempt(username=name, ip=ip, ok=ok, created_at=now))
        if ok:
            assert user is not None and digest is not None
            # a success clears the failures, and old hashes move to current parameters
            session.execute(
                delete(LoginAttempt).where(
                    LoginAttempt.username == name, LoginAttempt.ip == ip, LoginAttempt.ok.is_(False)
                )
            )
            if _hasher().check_needs_rehash(digest):
                user.password_hash = _hasher().hash(password)
            return Actor(user.id, user.username, user.role)
    raise UserError("wrong username or password")


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive UTC datetimes; PostgreSQL aware ones."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class SessionInfo:
    actor: Actor
    csrf_token: str


def create_session(
    store: Store, actor: Actor, lifetime: timedelta = SESSION_LIFETIME
) -> tuple[str, SessionInfo]:
    """A new session (the cookie's token, and the session with its CSRF token)."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with store.transaction() as session:
        session.execute(
            delete(WebSession).where(WebSession.user_id == actor.id, WebSession.expires_at < now)
        )
        session.add(
            WebSession(
                token_hash=_token_hash(token),
                user_id=actor.id,
                csrf_token=csrf,
                created_at=now,
                last_seen_at=now,
                expires_at=now + lifetime,
            )
        )
    return token, SessionInfo(actor, csrf)


def session_for(store: Store, token: str) -> SessionInfo | None:
    """The live session of this cookie token (its person active), else None."""
    if not token or len(token) > 200:
        return None
    now = datetime.now(UTC)
    with store.transaction() as session:
        row = session.execute(
            select(WebSession, User)
            .join(User, User.id == WebSession.user_id)
            .where(WebSession.token_hash == _token_hash(token), WebSession.expires_at > now)
        ).first()
        if row is None or not row[1].active:
            return None
        web, user = row
        if now - _aware(web.last_seen_at) > timedelta(minutes=1):
            web.last_seen_at = now
        return SessionInfo(Actor(user.id, user.username, user.role), web.csrf_token)


def end_session(store: Store, token: str) -> None:
    with store.transaction() as session:
        session.execute(delete(WebSession).where(WebSession.token_hash == _token_hash(token)))
