"""Working on the store as the user who owns it, when root runs the command.

The service runs as its own user (``tidings``), and so must everything that
touches its store: a SQLite file opened by root leaves root-owned ``-wal``,
``-shm`` and ``.lock`` files the service cannot open, and MariaDB's
unix_socket authentication maps the connecting process's effective user to
the account of that name.  So root switches its *effective* uid and gid to
the data directory's owner for the store's part, and back afterwards (the
real uid stays 0, which is what allows the way back).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from appliance.config.database import DatabaseLocation


@dataclass(frozen=True, slots=True)
class Owner:
    """A uid/gid and their names ("" when the id has no name here)."""

    uid: int
    gid: int
    user: str
    group: str

    @classmethod
    def of(cls, path: Path) -> Owner:
        st = path.stat()
        return cls(st.st_uid, st.st_gid, user_name(st.st_uid), group_name(st.st_gid))

    @classmethod
    def current(cls) -> Owner:
        uid, gid = os.geteuid(), os.getegid()
        return cls(uid, gid, user_name(uid), group_name(gid))


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def uid_of(name: str, default: int) -> int:
    """The uid of user `name` on this machine, else `default` (a fresh install may
    give the service user another number than the machine the backup came from)."""
    try:
        return pwd.getpwnam(name).pw_uid if name else default
    except KeyError:
        return default


def gid_of(name: str, default: int) -> int:
    try:
        return grp.getgrnam(name).gr_gid if name else default
    except KeyError:
        return default


def switching(owner: Owner) -> bool:
    """Whether `as_owner(owner)` changes anything (root working on another user's store)."""
    return os.geteuid() == 0 and owner.uid != 0


@contextlib.contextmanager
def as_owner(owner: Owner) -> Iterator[None]:
    """Run the block with `owner`'s effective uid and gid (only when root; else as is).

    Children spawned inside inherit them: unix_socket logins of ``mariadb-dump``
    are then the owner's too.
    """
    if not switching(owner):
        yield
        return
    groups = os.getgroups()
    os.setgroups([owner.gid])
    os.setegid(owner.gid)
    os.seteuid(owner.uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(groups)


def login_as(location: DatabaseLocation, owner: Owner) -> DatabaseLocation:
    """The location as `owner` logs in: a password-less MariaDB account is the OS
    user's own (unix_socket), so it takes the owner's name."""
    if location.kind == "mariadb" and not location.password and switching(owner) and owner.user:
        return replace(location, user=owner.user)
    return location
