"""Who may read and write the data directory: the service alone (SPEC M13, issue 12).

Keys 0600, no database file readable by other users, nothing group- or
world-writable, and on an installed host the directory owned by the service
user.  The walk is bounded (depth and entries) and never follows a link;
the private MariaDB server's own directory keeps MariaDB's modes and is not
walked.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path
from typing import Final

from appliance.config.database import PRIVATE_DIR, SQLITE_FILE, resolve_database
from appliance.doctor.model import Finding, Subject, Verdict
from appliance.system import layout

NAME: Final = "permissions"
_MAX_ENTRIES = 20_000
_MAX_DEPTH = 4
_SHOWN = 5
#: Files holding a private key (certs/selfsigned.py, keys.py, files.py).
_KEY_NAMES = ("privkey.pem", "bundle.pem")
_DATABASE_NAMES = (SQLITE_FILE, SQLITE_FILE + "-wal", SQLITE_FILE + "-shm")


def _is_key(name: str) -> bool:
    return name.endswith(".key") or name in _KEY_NAMES


def check_permissions(subject: Subject) -> Finding:
    """Fail on a group/world-writable data directory or file, a key other users can
    read, a world-readable database, or (installed) an owner other than the service user."""
    data_dir = subject.data_dir
    try:
        top = data_dir.lstat()
    except FileNotFoundError:
        return Finding(NAME, Verdict.OK, f"{data_dir}: not created yet")
    problems: list[tuple[Verdict, str]] = []
    fixes: list[str] = []
    if subject.installed:
        _owner(data_dir, top, problems, fixes)
    if not stat.S_ISDIR(top.st_mode):
        problems.append((Verdict.FAIL, f"{data_dir} is not a directory"))
    elif top.st_mode & 0o022:
        problems.append((Verdict.FAIL, f"{data_dir} is {_mode(top)}: others may write"))
        fixes.append(f"chmod 0750 {data_dir}")
    elif top.st_mode & 0o007:
        problems.append((Verdict.WARN, f"{data_dir} is {_mode(top)}: other users may look in"))
        fixes.append(f"chmod o-rwx {data_dir}")
    _walk(data_dir, problems, fixes)
    _config_file(subject, problems, fixes)
    figures = {"data_dir": str(data_dir), "mode": _mode(top), "owner": _user(top.st_uid),
               "problems": [text for _, text in problems[:20]]}
    if not problems:
        return Finding(NAME, Verdict.OK, f"{data_dir} is {_mode(top)}, owned by"
                       f" {_user(top.st_uid)}; keys and database private", figures=figures)
    worst = Verdict.FAIL if any(v is Verdict.FAIL for v, _ in problems) else Verdict.WARN
    shown = [text for _, text in problems[:_SHOWN]]
    more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
    return Finding(NAME, worst, "; ".join(shown) + more, "; ".join(dict.fromkeys(fixes)),
                   figures)


def _owner(data_dir: Path, top: os.stat_result, problems: list[tuple[Verdict, str]],
           fixes: list[str]) -> None:
    try:
        service = pwd.getpwnam(layout.SERVICE_USER)
    except KeyError:
        return
    if top.st_uid != service.pw_uid:
        problems.append((Verdict.FAIL, f"{data_dir} is owned by {_user(top.st_uid)}, not"
                         f" {layout.SERVICE_USER}: the service cannot write it"))
        fixes.append(f"chown -R {layout.SERVICE_USER}:{layout.SERVICE_USER} {data_dir}")


def _walk(data_dir: Path, problems: list[tuple[Verdict, str]], fixes: list[str]) -> None:
    seen = 0
    for root, dirs, files in os.walk(data_dir):  # os.walk does not follow links
        depth = len(Path(root).relative_to(data_dir).parts)
        if depth >= _MAX_DEPTH:
            dirs.clear()
        if root == str(data_dir) and PRIVATE_DIR in dirs:
            dirs.remove(PRIVATE_DIR)  # MariaDB's own files and modes
        for name in (*dirs, *files):
            seen += 1
            if seen > _MAX_ENTRIES:
                problems.append((Verdict.WARN, f"more than {_MAX_ENTRIES} entries: the rest"
                                 " was not checked"))
                return
            _entry(Path(root) / name, problems, fixes)


def _entry(path: Path, problems: list[tuple[Verdict, str]], fixes: list[str]) -> None:
    try:
        st = path.lstat()
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode):
        return
    if st.st_mode & 0o022:
        problems.append((Verdict.FAIL, f"{path} is {_mode(st)}: others may write"))
        fixes.append(f"chmod go-w {path}")
    elif _is_key(path.name) and st.st_mode & 0o077:
        problems.append((Verdict.FAIL, f"key {path} is {_mode(st)}: others may read it"))
        fixes.append(f"chmod 0600 {path}")
    elif path.name in _DATABASE_NAMES and st.st_mode & 0o004:
        problems.append((Verdict.FAIL, f"database {path} is {_mode(st)}: every user may"
                         " read it"))
        fixes.append(f"chmod 0600 {path}")


def _config_file(subject: Subject, problems: list[tuple[Verdict, str]],
                 fixes: list[str]) -> None:
    path = subject.config_file
    if path is None:
        return
    try:
        st = path.stat()
    except OSError:
        return
    if not st.st_mode & 0o004:
        return
    location = resolve_database(subject.config.storage.database, subject.data_dir)
    if location.password:
        problems.append((Verdict.FAIL, f"{path} is {_mode(st)} and holds the database"
                         " password: every user may read it"))
    else:
        problems.append((Verdict.WARN, f"{path} is {_mode(st)}: every user may read it"))
    fixes.append(f"chmod 0640 {path}; chown root:{layout.SERVICE_USER} {path}")


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
