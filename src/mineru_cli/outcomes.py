"""What each task outcome does to its document: the parent-side state of one document being
converted (:class:`DocState`), a failed attempt, a page window done (then the merge), a
conversion done (quality flags, ``--retry-ocr``, the staged record, the commit), and the last
word on documents a run leaves pending.

Must not: run tasks (an ``executor.Executor`` does, driven by ``run``), take documents from the
stream, or write to OUTPUT except the staged record (``records``) and through ``start_commit``.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

from . import ocr_retry
from .executor import Executor
from .jobs import Job
from .plan import PlannedDocument
from .record_index import file_entries
from .records import new_record, write_staged_record
from .report import DocumentReport, Reporter
from .settings import Settings
from .store import Output
from .tasks import attempt_entry, default_timeout, jobs_for, task_base


@dataclass
class DocState:
    """Parent-side state of one document being converted."""

    planned: PlannedDocument
    report: DocumentReport
    windows_left: int = 0
    window_dirs: list[str] = field(default_factory=list)
    failed: bool = False
    attempts: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    fingerprint: str | None = None
    ocr_tier: str | None = None  # --retry-ocr: the tier an OCR reconversion runs at (None: none)
    ocr_why_not: str = ""
    ocr_first: dict | None = None  # --retry-ocr: the first conversion, once it was retried


def settle_unfinished(states: dict[str, DocState], interrupted: int | None, started_docs: set[str],
                       rep: Reporter, stopped: str | None = None) -> None:
    """The last word on documents still pending: interrupted (failed when a worker had started
    them, else skipped as not started) by a signal or by ``stopped`` (one line: the run-wide
    error that stopped the run), or, without either, an internal error."""
    for st in states.values():
        r = st.report
        if r.status == "pending":
            if interrupted is not None or stopped is not None:
                started = bool(st.attempts) or bool(st.window_dirs) or st.planned.id in started_docs
                r.status = "failed" if started else "skipped"
                r.code = "interrupted"
                if stopped is not None:
                    r.reason = (f"{stopped}, while converting; a rerun resumes" if started
                                else f"not started: {stopped}; a rerun resumes")
                else:
                    name = signal.Signals(interrupted).name
                    r.reason = (f"interrupted by {name} while converting; a rerun resumes" if started
                                else f"not started: run interrupted by {name}; a rerun resumes")
                r.set_attempts(st.attempts)
            else:
                r.status, r.code, r.reason = "failed", "internal", "internal error: no outcome recorded"
            rep.finished(r, advance=False)


def stopped_by_interrupt(oc) -> bool:
    """A failed attempt whose worker died (signal or exit code) while the run was stopping."""
    return not oc.result.get("ok") and oc.result.get("code") in ("worker_killed", "worker_crashed", "interrupted")


def record_attempt(states: dict[str, DocState], job: Job, res: dict) -> None:
    st = states[job.task["doc"]]
    st.attempts.append(attempt_entry(job, res, "retrying"))


def handle_outcome(oc, states, s: Settings, out: Output, pool: Executor, rep: Reporter, start_commit,
                    mineru_version, run_dir) -> None:
    import logging

    log = logging.getLogger("mineru_cli")
    job, res = oc.job, oc.result
    st = states[job.task["doc"]]
    p = st.planned
    st.seconds += res.get("seconds", oc.seconds) or 0.0
    if res.get("traceback"):
        log.error("traceback for %s (attempt %d):\n%s", p.source.rel, job.attempt, res["traceback"])
    kind = job.meta[0]
    if not res.get("ok"):
        st.attempts.append(attempt_entry(job, res, "failed"))
        if st.failed:
            return
        st.failed = True
        reason = res.get("reason", "failed")
        if kind == "window":
            reason = f"pages {job.meta[2]}-{job.meta[3]}: {reason}"
        _fail(st, rep, res.get("code"), reason)
        return
    st.attempts.append(attempt_entry(job, res, "ok"))
    if st.failed:
        return
    if kind == "render":  # the old record, now listing the new formats too (done-record written last)
        old = p.record or {}
        record = dict(old, settings=p.settings_key, rendered={"formats": list(p.render_formats), "at": time.time()})
        start_commit(st, record, keep=file_entries(old))
        return
    if kind == "window":
        st.windows_left -= 1
        if st.windows_left == 0:
            staging = os.path.join(out.staging_root, p.id)
            task = dict(task_base(st, s, out, run_dir), kind="merge", task_id=f"{p.id}:merge", staging=staging,
                        windows=list(st.window_dirs) if s.executor != "ray"
                        else [os.path.basename(w) for w in st.window_dirs])
            pool.submit(Job(task=task, timeout=default_timeout(s, (p.pages or 0) // 10), meta=("merge", p.id)))
        return
    _finish_conversion(st, res, s, out, rep, start_commit, mineru_version,
                       resubmit=lambda st: [pool.submit(j) for j in jobs_for(st, s, out, run_dir)])


def _finish_conversion(st: DocState, res: dict, s: Settings, out: Output, rep: Reporter, start_commit,
                       mineru_version, resubmit=None) -> None:
    """A document's conversion succeeded (``res``, the worker's result): an OCR retry when
    ``--retry-ocr`` asks for one, else its quality warnings, then its staged record and commit
    (or, from a Ray worker that committed it, the report entry)."""
    from .sniff import fingerprint_local

    p = st.planned
    quality = dict(res.get("quality") or {})
    r = st.report
    r.pages = res.get("pages", p.pages)
    retry, why = ocr_retry.ocr_retry_decision(p.source.kind, quality, retry_ocr=s.retry_ocr, ocr_mode=p.ocr_mode,
                                    ocr_tier=st.ocr_tier, why_not=st.ocr_why_not)
    if retry and (resubmit is None or res.get("committed")):
        retry, why = False, "--retry-ocr: not available with --executor ray (the worker committed the result)"
    if retry:  # convert again with OCR; the first conversion stays in the record
        ocr_retry.begin_retry(st, why, quality)
        resubmit(st)
        return
    ocr_retry.note_outcome(quality, st.ocr_first, why)
    r.quality = quality
    no_text_msg = ("no_text: the result has no text" + ("; scans and images need OCR: tier basic and its models "
                   "(mineru-kit models download --tier basic)" if p.tier == "flash" else ""))
    if quality.get("no_text"):
        r.warnings.append(no_text_msg)
    if quality.get("garbled_text"):
        r.warnings.append(f"garbled_text: the text layer looks like mojibake (score {quality.get('garbled_score')})")
    if quality.get("empty_pages"):
        r.warnings.append(f"{quality['empty_pages']} empty pages")
    if why and st.ocr_first is None:
        r.warnings.append(why)
    if s.on_empty == "fail" and quality.get("no_text"):
        _fail(st, rep, "no_text", no_text_msg + " (--on-empty fail)")
        return
    if res.get("committed"):  # a Ray worker already committed it (done-record written last)
        r.status, r.code, r.reason = "converted", None, "converted"
        r.warnings.extend(res.get("commit_warnings") or [])
        r.seconds = round(st.seconds, 3)
        r.set_attempts(st.attempts)
        r.output = out.display(p.key)
        rep.finished(r)
        return
    fp = p.fingerprint
    if fp is None and p.source.is_local:
        try:
            fp = fingerprint_local(p.source.uri)
        except OSError as exc:
            _fail(st, rep, "unreadable", f"corrupt or unreadable: input vanished: {exc}")
            return
    record = new_record(p, fingerprint=fp, pages=r.pages, seconds=st.seconds, quality=quality,
                        attempts=st.attempts, mineru_version=mineru_version)
    # the staged record right away (main thread): a run killed while commits are queued (slow
    # uploads) leaves results the next run commits without converting again
    write_staged_record(os.path.join(out.staging_root, p.id), record)
    start_commit(st, record)


def _fail(st: DocState, rep: Reporter, code: str | None, reason: str) -> None:
    r = st.report
    r.status, r.code, r.reason = "failed", code, reason
    r.seconds = round(st.seconds, 3)
    r.set_attempts(st.attempts)
    rep.finished(r)
