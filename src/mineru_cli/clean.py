"""``clean``: remove old results and stale partial results from OUTPUT (local disk or any
fsspec URL such as ``s3://bucket/prefix``).

What counts as a result of this tool, and nothing else is ever touched:

* a **converted result**: a folder with a done-record (``.mineru-cli.done.json``). It is
  removed when the done-record's ``committed_at`` is older than ``--older-than``: the files
  the done-record lists, the done-record itself and a pending marker if one is left; then
  the folder when it is empty (local disk). Files the done-record does not list (a user's
  own notes put there) and sub-folders (other documents' results) stay.
* a **partial result**: a folder with the ``.mineru-cli.pending`` marker and no
  done-record (a commit that was interrupted). It is removed when the marker is older than
  the age: the plain files in the folder, its ``images/`` and the marker (the same files
  the commit protocol itself would replace).
* a **staged result**: a folder ``<16 hex digits>`` in the staging root of this OUTPUT
  (``OUTPUT/.mineru-cli/staging`` on local disk; for a remote OUTPUT the local cache folder
  or ``--staging-dir``) whose newest file is older than the age.
* a leftover **write probe** ``OUTPUT/.mineru-cli-probe-*`` older than the age.

A converted result is removed in an order that never leaves a done-record next to missing
files: pending marker written, done-record deleted, files deleted, marker deleted. An
interrupted clean leaves a partial result, which the next clean (or convert) replaces.

``clean`` takes the OUTPUT's run lock (exit 4 while a convert writes there); ``--dry-run``
takes no lock and writes nothing.

Must not: touch anything without this tool's done-record or pending marker, write results, or
import fsspec (storage calls go through ``store`` and ``storage``).
"""

from __future__ import annotations

import bisect
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field

from .errors import EXIT_FAILED, EXIT_OK, EnvironmentProblem, OutputLocked, UsageError
from .records import DONE_NAME, STAGED_NAME, read_done_records
from .store import META_DIR, PENDING_NAME, PROBE_PREFIX, Output, RunLock, open_output

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_STAGING_ID = re.compile(r"^[0-9a-f]{16}$")


def parse_age(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``90s``, ``2w``, ``1d12h`` -> seconds. Raises UsageError."""
    t = str(text).strip().lower().replace(" ", "")
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhdw])", t)
    if not t or not parts or "".join(a + u for a, u in parts) != t:
        raise UsageError(f"--older-than {text!r}: expected an age such as 7d, 12h, 30m, 90s or 2w")
    return sum(float(a) * _UNITS[u] for a, u in parts)


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} bytes"  # pragma: no cover


def human_age(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.0f} minutes"


@dataclass
class Entry:
    """One file under OUTPUT: path relative to OUTPUT (POSIX), size, mtime (epoch seconds)."""

    rel: str
    size: int
    mtime: float


@dataclass
class Candidate:
    """A result that may be removed. ``kind``: converted | partial | staged | probe;
    ``files``: paths relative to OUTPUT (staged: the local folder)."""

    kind: str
    key: str
    age: float
    files: list[Entry] = field(default_factory=list)
    note: str = ""

    @property
    def size(self) -> int:
        return sum(e.size for e in self.files)


def _list_local(root: str) -> list[Entry]:
    out: list[Entry] = []
    for dirpath, dirs, files in os.walk(root):
        if dirpath == root:
            dirs[:] = [d for d in dirs if d != META_DIR]
        dirs.sort()
        for f in files:
            full = os.path.join(dirpath, f)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            out.append(Entry(os.path.relpath(full, root).replace(os.sep, "/"), st.st_size, st.st_mtime))
    return sorted(out, key=lambda e: e.rel)


def _list_remote(out: Output) -> list[Entry]:
    root = out.root.rstrip("/")
    found = out.fs.find(root, detail=True, withdirs=False)
    entries = []
    for path, meta in found.items():
        if meta.get("type") == "directory" or not path.startswith(root + "/"):
            continue
        rel = path[len(root) + 1:]
        if rel == META_DIR or rel.startswith(META_DIR + "/"):
            continue
        mtime = meta.get("LastModified") or meta.get("mtime") or 0
        mtime = mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime or 0)
        entries.append(Entry(rel, int(meta.get("size") or 0), mtime))
    return sorted(entries, key=lambda e: e.rel)


def _under(entries: list[Entry], rels: list[str], key: str) -> list[Entry]:
    """Entries strictly inside folder ``key``: plain files directly in it and everything under
    its ``images/`` (deeper folders are other documents' results)."""
    prefix = key + "/"
    i = bisect.bisect_left(rels, prefix)
    out = []
    while i < len(rels) and rels[i].startswith(prefix):
        rest = rels[i][len(prefix):]
        if "/" not in rest or rest.startswith("images/"):
            out.append(entries[i])
        i += 1
    return out


def _safe_name(name: object) -> bool:
    if not isinstance(name, str) or not name or name.startswith("/") or "\\" in name:
        return False
    return all(p not in ("", ".", "..") for p in name.split("/"))


def find_candidates(out: Output, older_than: float, now: float | None = None) -> tuple[list[Candidate], int]:
    """Results under OUTPUT older than ``older_than`` seconds, and the number of results kept
    because they are newer. Raises the storage's errors (listing, reading done-records)."""
    now = time.time() if now is None else now
    entries = _list_local(out.root) if out.is_local else _list_remote(out)
    rels = [e.rel for e in entries]
    by_rel = {e.rel: e for e in entries}
    done_keys = [r[: -len(DONE_NAME) - 1] for r in rels if r.endswith("/" + DONE_NAME)]
    pending_keys = [r[: -len(PENDING_NAME) - 1] for r in rels if r.endswith("/" + PENDING_NAME)]
    records = read_done_records(out, done_keys)
    found: list[Candidate] = []
    kept = 0
    for key in done_keys:
        rec = records.get(key)
        done = by_rel[f"{key}/{DONE_NAME}"]
        when = None
        if isinstance(rec, dict):
            when = rec.get("committed_at") or rec.get("created_at")
        when = float(when) if isinstance(when, (int, float)) else done.mtime
        age = now - when
        if age <= older_than:
            kept += 1
            continue
        if isinstance(rec, dict) and isinstance(rec.get("files"), list):
            names = [f.get("name") for f in rec["files"] if isinstance(f, dict)]
            files = [by_rel[f"{key}/{n}"] for n in names if _safe_name(n) and f"{key}/{n}" in by_rel]
            note = f"converted {human_age(age)} ago"
        else:  # unreadable done-record: the files the commit protocol would replace
            files = [e for e in _under(entries, rels, key) if not e.rel.endswith("/" + DONE_NAME)]
            note = f"converted {human_age(age)} ago; unreadable done-record"
        files = [f for f in files if f.rel not in (f"{key}/{DONE_NAME}", f"{key}/{PENDING_NAME}")]
        files.append(done)
        if f"{key}/{PENDING_NAME}" in by_rel:
            files.append(by_rel[f"{key}/{PENDING_NAME}"])
        found.append(Candidate("converted", key, age, files, note))
    done_set = set(done_keys)
    for key in pending_keys:
        if key in done_set:
            continue
        marker = by_rel[f"{key}/{PENDING_NAME}"]
        age = now - marker.mtime
        if age <= older_than:
            kept += 1
            continue
        files = [e for e in _under(entries, rels, key) if e.rel != marker.rel] + [marker]
        found.append(Candidate("partial", key, age, files,
                               f"partial result without done-record, started {human_age(age)} ago"))
    for e in entries:
        if "/" not in e.rel and e.rel.startswith(PROBE_PREFIX) and now - e.mtime > older_than:
            found.append(Candidate("probe", e.rel, now - e.mtime, [e], "leftover write probe"))
    staged, staged_kept = _staged_candidates(out.staging_root, older_than, now)
    found.sort(key=lambda c: (c.kind == "staged", c.key))
    return found + staged, kept + staged_kept


def _staged_candidates(staging_root: str, older_than: float, now: float) -> tuple[list[Candidate], int]:
    if not os.path.isdir(staging_root):
        return [], 0
    found, kept = [], 0
    for name in sorted(os.listdir(staging_root)):
        folder = os.path.join(staging_root, name)
        if not _STAGING_ID.match(name) or not os.path.isdir(folder) or os.path.islink(folder):
            continue
        files: list[Entry] = []
        newest = os.lstat(folder).st_mtime
        for dirpath, _dirs, fnames in os.walk(folder):
            for f in fnames:
                st = os.lstat(os.path.join(dirpath, f))
                files.append(Entry(os.path.relpath(os.path.join(dirpath, f), folder), st.st_size, st.st_mtime))
                newest = max(newest, st.st_mtime)
        age = now - newest
        if age <= older_than:
            kept += 1
            continue
        what = "partial staging"
        try:
            with open(os.path.join(folder, STAGED_NAME), encoding="utf-8") as fh:
                rel = json.load(fh).get("input", {}).get("rel")
            what = f"staged result of {rel}, never uploaded" if rel else "staged result, never uploaded"
        except (OSError, ValueError, AttributeError):
            pass
        found.append(Candidate("staged", folder, age, files, f"{what}, {human_age(age)} old"))
    return found, kept


def remove(out: Output, c: Candidate) -> None:
    """Remove one candidate (see the module docstring for the order). Raises on failure."""
    if c.kind == "staged":
        shutil.rmtree(c.key)
        return
    paths = [out.path(e.rel) for e in c.files]
    if c.kind == "converted":
        done = out.path(c.key, DONE_NAME)
        pending = out.path(c.key, PENDING_NAME)
        rest = [p for p in paths if p not in (done, pending)]
        _write(out, pending)
        _delete(out, [done])
        _delete(out, rest)
        _delete(out, [pending])
    elif c.kind == "partial":
        pending = out.path(c.key, PENDING_NAME)
        _delete(out, [p for p in paths if p != pending])
        _delete(out, [pending])
    else:
        _delete(out, paths)
    if out.is_local:
        _prune_local(out.root, c)
    else:
        try:
            out.fs.invalidate_cache(out.path(c.key))
        except Exception:  # noqa: BLE001
            pass


def _write(out: Output, path: str) -> None:
    if out.is_local:
        with open(path, "wb"):
            pass
    else:
        out.fs.pipe_file(path, b"")


def _delete(out: Output, paths: list[str]) -> None:
    if not paths:
        return
    if out.is_local:
        for p in paths:
            try:
                os.remove(p)
            except FileNotFoundError:
                pass
        return
    from .storage import retrying as _retrying

    for p in paths:  # one DELETE each: fs.rm(list) expands glob characters, so "draft[1].pdf" was missed
        try:
            _retrying(out.fs.rm_file, p)
        except FileNotFoundError:
            pass


def _prune_local(root: str, c: Candidate) -> None:
    """Remove folders left empty by the removal, up to (not including) OUTPUT."""
    folders = {os.path.dirname(os.path.join(root, e.rel)) for e in c.files}
    for folder in sorted(folders, key=len, reverse=True):
        cur = folder
        while os.path.normpath(cur) != os.path.normpath(root) and cur.startswith(root):
            try:
                os.rmdir(cur)
            except OSError:
                break
            cur = os.path.dirname(cur)


def _forget_in_index(out, keys: list[str], say) -> None:
    """Drop the removed results' entries from the done-record index (``record_index``), so it
    does not grow with OUTPUT's history. The index only saves reads: a failure is one line, and
    the entries left point at done-records that are gone (a run then finds none: no harm)."""
    if not keys:
        return
    from .record_index import RecordIndex
    from .storage import explain_storage_error

    index = None
    try:
        index = RecordIndex(out)
        index.forget(keys)
    except Exception as exc:  # noqa: BLE001
        say(f"could not drop the removed results from the done-record index: {explain_storage_error(exc, out.url)}")
    finally:
        if index is not None:
            index.close()


def run_clean(s, older_than: str) -> int:
    """``mineru-cli clean OUTPUT --older-than AGE [--dry-run]`` with settings ``s`` (output,
    storage options, endpoint, staging dir, dry_run, quiet). Returns the exit code:
    0 done (also when nothing was old enough), 1 some results could not be removed,
    2 usage error, 3 OUTPUT not reachable/readable, 4 a convert run holds OUTPUT's lock."""
    from .redact import redact_text, redact_url, register_settings_secrets
    from .storage import explain_storage_error

    age = parse_age(older_than)
    if not s.output:
        raise UsageError("no output given")
    register_settings_secrets(s)
    shown = redact_url(s.output)

    def say(msg: str) -> None:
        print(redact_text(msg), flush=True)

    try:
        options, endpoint = s.output_storage()
        out = open_output(s.output, storage_options=options, staging_dir=s.staging_dir, endpoint_url=endpoint)
    except Exception as exc:  # noqa: BLE001
        raise EnvironmentProblem(redact_text(f"output {shown}: cannot open: {type(exc).__name__}: {exc}")) from None
    if out.is_local and not os.path.isdir(out.root):
        raise UsageError(f"output {shown}: not found (no such folder)")

    lock = None
    if not s.dry_run:
        lock = RunLock(out.lock_dir)
        if not lock.acquire():
            holder = lock.holder() or {}
            raise OutputLocked(f"a mineru-cli run (pid {holder.get('pid', '?')} on {holder.get('host', '?')}) "
                               f"is writing to {shown}; clean it when that run has finished")
    try:
        try:
            candidates, kept = find_candidates(out, age)
        except Exception as exc:  # noqa: BLE001
            raise EnvironmentProblem(f"output {shown} cannot be listed: {explain_storage_error(exc, s.output)}") from None
        removed: list[Candidate] = []
        failed = 0
        for c in candidates:
            if c.kind == "staged":
                where = c.key + os.sep
            elif c.kind == "probe":
                where = f"{out.url.rstrip('/')}/{c.key}"
            else:
                where = out.display(c.key)
            detail = f"({c.note}; {len(c.files)} files, {c.size:,} bytes)"
            if s.dry_run:
                say(f"would remove  {where}  {detail}")
                removed.append(c)
                continue
            try:
                remove(out, c)
            except Exception as exc:  # noqa: BLE001
                failed += 1
                say(f"failed to remove  {where}: {explain_storage_error(exc, s.output)}")
                continue
            removed.append(c)
            if not s.quiet:
                say(f"removed  {where}  {detail}")
        if not s.dry_run:
            _forget_in_index(out, [c.key for c in removed if c.kind in ("converted", "partial")], say)
        freed = sum(c.size for c in removed)
        kinds = {k: sum(1 for c in removed if c.kind == k) for k in ("converted", "partial", "staged", "probe")}
        what = ", ".join(f"{n} {k}" for k, n in kinds.items() if n) or "nothing"
        if s.dry_run:
            say(f"dry run: would remove {len(removed)} results ({what}) and free {freed:,} bytes "
                f"({human_bytes(freed)}); {kept} newer results kept; nothing was removed")
        else:
            say(f"clean: removed {len(removed)} results ({what}), freed {freed:,} bytes ({human_bytes(freed)}); "
                f"{kept} newer results kept" + (f"; {failed} could not be removed" if failed else ""))
        return EXIT_FAILED if failed else EXIT_OK
    finally:
        if lock is not None:
            lock.release()
