"""The run's temporary folders (``$TMPDIR/mineru-cli-<kind>-<host>-<pid>-<random>``), and the
sweep of those left by runs that were killed (``kill -9``, out of memory): a run ended that
way cannot remove its own, and a cron job killed every night would fill the temporary folder.

A folder is swept only when its name carries this machine's host name and a pid that no
process has now: a live run's folders (this machine's) are never touched, and neither are
those of another machine or container sharing the temporary folder (another host name).

Must not: import anything heavy, or touch a path that is not one of these folders.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile

KINDS = ("index", "listing", "run")
_NAME = re.compile(r"^mineru-cli-(?:%s)-(?P<host>[0-9a-z]{1,16})-(?P<pid>\d+)-" % "|".join(KINDS))


def _host() -> str:
    """This machine's host name as a folder name part: lower-case letters and digits, at most
    16 (``socket.gethostname``)."""
    return re.sub(r"[^0-9a-z]", "", socket.gethostname().lower())[:16] or "host"


def make(kind: str) -> str:
    """A new temporary folder for ``kind`` (one of ``KINDS``) of this process; returns its path.
    Raises OSError when the temporary folder is not writable."""
    assert kind in KINDS, kind
    return tempfile.mkdtemp(prefix=f"mineru-cli-{kind}-{_host()}-{os.getpid()}-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: a process of another user has it
        return True
    return True


def sweep() -> int:
    """Remove the temporary folders of this machine's runs whose process is gone. Returns how
    many were removed; never raises (a folder that cannot be removed is left)."""
    root, host, removed = tempfile.gettempdir(), _host(), 0
    try:
        names = os.listdir(root)
    except OSError:
        return 0
    for name in names:
        m = _NAME.match(name)
        if not m or m["host"] != host or int(m["pid"]) == os.getpid() or _alive(int(m["pid"])):
            continue
        path = os.path.join(root, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            removed += not os.path.exists(path)
    return removed
