"""Commit finished results in the background and report each one when its commit ends.

A :class:`Committer` runs ``store.commit`` on a few threads (one for a local OUTPUT, where a
commit is renames; up to 8 uploads for a remote one) and, when a commit ends, fills in the
document's report: converted, or failed with ``storage_error`` (the result stays in staging
and a rerun uploads it).

Must not: convert anything, write to OUTPUT itself (``store`` does), or decide what to commit.
"""

from __future__ import annotations

import os
import queue
from concurrent.futures import ThreadPoolExecutor

from .store import commit


class Committer:
    """Background commits of one run to ``out`` (a ``store.Output``), reported on ``rep``
    (a ``report.Reporter``). ``threads``: commits at once; ``upload_attempts``: tries per
    storage call (``store.commit``); ``on_done(key, record, signature)``: told of each commit
    that succeeded, with the done-record as written (``store.Committed``: the done-record index). Documents are ``run.DocState`` s."""

    def __init__(self, out, rep, *, threads: int, upload_attempts: int, on_done=None) -> None:
        self.out, self.rep, self.upload_attempts = out, rep, upload_attempts
        self.on_done = on_done  # on_done(key, record, signature): a commit succeeded
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mineru-cli-commit")
        self.pending: dict = {}  # future -> (DocState, record)
        self._done: queue.SimpleQueue = queue.SimpleQueue()  # futures of finished commits, in order

    def start(self, st, record: dict, keep: list[dict] | None = None) -> None:
        """Commit the staging folder of ``st`` with its done-record ``record`` (never raises);
        ``keep``: files of the result already there that stay (``store.commit``: a render-only rerun)."""
        staging = os.path.join(self.out.staging_root, st.planned.id)
        fut = self._pool.submit(commit, self.out, st.planned.key, staging, record, upload_attempts=self.upload_attempts,
                                keep=keep, fresh=st.planned.fresh)
        self.pending[fut] = (st, record)
        fut.add_done_callback(self._done.put)

    def wait_for_one(self, timeout: float) -> None:
        """Block until some commit finished (or ``timeout`` seconds); its future is put back for
        :meth:`drain`."""
        try:
            self._done.put(self._done.get(timeout=timeout))
        except queue.Empty:
            pass

    def drain(self, block: bool) -> None:
        """Report the commits that finished (each future arrives from its done callback: no scan
        of all pending commits per call); with ``block`` wait for all."""
        from concurrent.futures import wait as fwait

        commits = self.pending
        if not commits:
            return
        ready: list = []
        if block:
            fwait(list(commits))
            ready = list(commits)
        else:
            while True:
                try:
                    ready.append(self._done.get_nowait())
                except queue.Empty:
                    break
        for fut in ready:
            if fut not in commits:
                continue  # already reported (a blocking drain took it before its callback ran)
            st, record = commits.pop(fut)
            self._report(st, record, fut)

    def _report(self, st, record: dict, fut) -> None:
        out = self.out
        r = st.report
        r.seconds = round(st.seconds or record.get("seconds", 0.0), 3)
        r.set_attempts(st.attempts or record.get("attempts", []))
        r.tier = record.get("tier", r.tier)
        r.pages = record.get("pages", r.pages)
        r.quality = record.get("quality", r.quality)
        exc = fut.exception()
        if exc is not None:
            from .storage import explain_storage_error

            r.status, r.code = "failed", "storage_error"
            r.reason = (f"storage error: upload to {out.display(st.planned.key)} failed: {explain_storage_error(exc, out.url)}; "
                        "the converted result is kept in staging and a rerun uploads it")
        else:
            r.status, r.code = "converted", None
            r.reason = {"convert": "converted", "render": f"rendered {', '.join(st.planned.render_formats)} from "
                        "the middle JSON (not converted again)"}.get(st.planned.action,
                                                                     "committed a result staged by an earlier run")
            r.rendered = list(st.planned.render_formats) or None
            r.output = out.display(st.planned.key)
            done = fut.result()
            r.warnings.extend(done.warnings)
            if self.on_done is not None:
                self.on_done(st.planned.key, done.record, done.signature)
        self.rep.finished(r)

    def shutdown(self) -> None:
        """Wait for the commit threads to end."""
        self._pool.shutdown(wait=True)
