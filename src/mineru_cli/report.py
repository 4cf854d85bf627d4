"""Progress, per-document lines, the final summary and the JSON report.

On a terminal: a rich progress bar. Otherwise (cron, CI): one plain line per document, so a
log shows what happened to each file. ``--report FILE.json`` writes::

    {"summary": {"converted", "skipped", "failed", "total", "pages", "seconds", "flagged",
                 "rendered", "started", "decision": {...}, ...},
     "documents": [{"input", "status": "converted|skipped|failed", "code", "reason", "tier",
                    "pages", "seconds", "output", "attempts": [...], "quality": {...},
                    "warnings": [...], "started", "ended", "worker", "rendered", "type"}, ...]}

Every input found appears exactly once, in discovery order. Times: ``seconds`` are durations;
``started``/``ended`` are epoch seconds (the run's start in the summary; a document's first
attempt's start and last attempt's end, None when no worker saw it); ``worker`` is the pid of
the worker process that ran the document's last attempt; ``rendered`` lists the formats a
render-only rerun made from the middle JSON (nothing converted), else None. Each attempt has
``attempt``, ``status``, ``code``, ``reason``, ``seconds``, and ``started``/``ended``/``worker``.
``type``: the document's sniffed type (``pdf``, ``docx``, ...). ``summary.interrupted``:
``"SIGINT"``/``"SIGTERM"`` when the run was stopped by that signal (exit 130/143), else None;
``summary.dry_run``: true for ``--dry-run`` (its documents to convert have status ``pending``). ``summary.decision``: the backend
and tier chosen, with the reasons; ``summary.output``: ``{"url", "local_root"}`` (the absolute
folder of a local OUTPUT, else None), so a report drawn later links the results.

Must not: decide a document's status (``run`` and ``commits`` do), or import rich at module level.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field, fields
from typing import Any

from .redact import may_hold_secret, redact_data, redact_text

log = logging.getLogger("mineru_cli")


@dataclass
class DocumentReport:
    """One line of the report. ``status``: converted | skipped | failed; ``code``: a stable
    machine-readable reason (``empty``, ``encrypted``, ``corrupt``, ``timeout``, ...)."""

    input: str
    status: str = "pending"
    code: str | None = None
    reason: str = ""
    tier: str | None = None
    pages: int | None = None
    seconds: float = 0.0
    output: str | None = None
    attempts: list[dict] = field(default_factory=list)
    quality: dict | None = None
    warnings: list[str] = field(default_factory=list)
    started: float | None = None
    ended: float | None = None
    worker: int | None = None
    rendered: list[str] | None = None
    type: str | None = None

    def set_attempts(self, attempts: list[dict]) -> None:
        """Take ``attempts`` (dicts, see the module docstring) and the times and worker they give."""
        self.attempts = attempts
        starts = [a["started"] for a in attempts if isinstance(a.get("started"), (int, float))]
        ends = [a["ended"] for a in attempts if isinstance(a.get("ended"), (int, float))]
        self.started = min(starts) if starts else self.started
        self.ended = max(ends) if ends else self.ended
        workers = [a["worker"] for a in attempts if a.get("worker")]
        self.worker = workers[-1] if workers else self.worker


_REPORT_FIELDS: tuple[str, ...] = ()


def report_fields() -> tuple[str, ...]:
    """The keys of one document in the JSON report, in order (``DocumentReport``'s fields)."""
    global _REPORT_FIELDS
    if not _REPORT_FIELDS:
        _REPORT_FIELDS = tuple(f.name for f in fields(DocumentReport))
    return _REPORT_FIELDS


def document_json(doc: DocumentReport) -> bytes:
    """One document of the report as compact JSON (UTF-8; secrets redacted:
    ``redact.redact_data``; a file name that is not valid UTF-8 as its JSON escape): exactly
    ``json.dumps(..., ensure_ascii=False)`` of its fields, through one C encoder made once (a
    rerun over many finished documents spends much of its time here)."""
    data = doc.__dict__
    if len(data) != len(report_fields()):  # an attribute set beside the fields: the fields only
        data = {n: getattr(doc, n) for n in report_fields()}
    text = "".join(_encode(data, 0))
    if may_hold_secret(text):  # else nothing to redact (the common case: skip the walk)
        text = "".join(_encode(redact_data(data), 0))
    return text.encode("utf-8", "backslashreplace")


def skipped_json(input: str, code: str | None, reason: str, tier: str | None, pages: int | None,
                 output: str | None, kind: str | None) -> bytes:
    """:func:`document_json` of ``DocumentReport(input, status="skipped", code, reason, tier,
    pages, output=output, type=kind)``, byte for byte, without making one: a rerun over many
    finished documents writes this line for each (the C string encoder for the strings, the
    rest fixed text). Values of another type than the annotations', or a line that may hold a
    secret, take :func:`document_json`."""
    enc = _encode_str
    if not (type(input) is str and type(reason) is str and (code is None or type(code) is str)
            and (tier is None or type(tier) is str) and (pages is None or type(pages) is int)
            and (output is None or type(output) is str) and (kind is None or type(kind) is str)):
        return document_json(DocumentReport(input=input, status="skipped", code=code, reason=reason, tier=tier,
                                            pages=pages, output=output, type=kind))
    text = "".join(('{"input": ', enc(input), ', "status": "skipped", "code": ', "null" if code is None else enc(code),
                    ', "reason": ', enc(reason), ', "tier": ', "null" if tier is None else enc(tier),
                    ', "pages": ', "null" if pages is None else int.__repr__(pages),
                    ', "seconds": 0.0, "output": ', "null" if output is None else enc(output), _SKIPPED_MIDDLE,
                    "null" if kind is None else enc(kind), "}"))
    if may_hold_secret(text):
        return document_json(DocumentReport(input=input, status="skipped", code=code, reason=reason, tier=tier,
                                            pages=pages, output=output, type=kind))
    return text.encode("utf-8", "backslashreplace")


# DocumentReport's defaults between ``output`` and ``type``, as document_json writes them
_SKIPPED_MIDDLE = (', "attempts": [], "quality": null, "warnings": [], "started": null, "ended": null, '
                   '"worker": null, "rendered": null, "type": ')


def _make_encoder():
    """``json.dumps(obj, ensure_ascii=False)`` as the C encoder CPython's ``json`` builds for
    each call (json/encoder.py ``JSONEncoder.iterencode``), made once; no check for circular
    references (report data is a tree). ``_encode(obj, 0)`` yields the text's pieces."""
    from json import encoder

    base = encoder.JSONEncoder(ensure_ascii=False)
    make = encoder.c_make_encoder
    if make is None:  # no C accelerator: the Python encoder
        return lambda obj, _level: base.iterencode(obj)
    return make(None, base.default, encoder.encode_basestring, None, base.key_separator, base.item_separator,
                False, False, True)


_encode = _make_encoder()
_encode_str = json.encoder.encode_basestring  # ensure_ascii=False's string encoder (C when available)
_SEP = b",\n    "  # between two documents of the report


class EventsBusy(Exception):
    """The ``--events`` file is held by another live mineru-cli run (its ``flock``)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class Reporter:
    """Takes every document's last word and tells the user: a line per document, progress,
    the summary, the JSON report, the events file. ``quiet``: only failures, a progress line
    every ``progress_every`` seconds and the summary; ``verbose``: also skipped documents' lines
    on a terminal; ``events``: ``--events FILE`` (JSON Lines, see :meth:`open_events`);
    ``keep``: keep the documents' report lines for :meth:`write_report` (a run without
    ``--report`` or ``--html-report`` spools nothing).

    Memory does not grow with the run: a document is held from :meth:`add` to
    :meth:`finished`; then its report line goes to a temporary spool file (16 bytes of offset
    and length per document stay) and the counts are updated. :meth:`write_json` streams the
    report from the spool in discovery order (the order of :meth:`add`).
    """

    def __init__(self, *, quiet: bool = False, verbose: int = 0, stream=None, events: str | None = None,
                 progress_every: float = 30.0, keep: bool = True) -> None:
        from array import array

        self.quiet, self.verbose = quiet, verbose
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.started = time.time()
        self._progress = None
        self._task = None
        self.extra: dict[str, Any] = {}
        self.counts = {"converted": 0, "skipped": 0, "failed": 0}
        self.total = 0  # documents added
        self.pages = 0  # pages of converted documents
        self.flagged = 0
        self.rendered = 0
        self._open: dict[int, tuple[int, DocumentReport]] = {}  # id(doc) -> (sequence, doc): added, not finished
        self._spool = None
        self._offsets = array("q")
        self._lengths = array("l")
        self._spooled = 0  # bytes in the spool (written or held)
        self._pending: list[bytes] = []  # report lines not yet written to the spool
        self._pending_size = 0
        self.keep = keep
        self._events: int | None = None
        self.found_count = 0
        self.discovery_ended = False
        self.progress_every = progress_every
        self._last_line = time.monotonic()
        self._rates: list[tuple[float, int]] = []  # (monotonic time, documents done), one per second
        if events:
            self.open_events(events)

    # --- lines -----------------------------------------------------------------------------------

    def info(self, message: str) -> None:
        """A run-level line (tier chosen, backend, lock taken over...)."""
        log.info(message)
        if not self.quiet:
            self._print(message)

    def warn(self, message: str) -> None:
        log.warning(message)
        self._print(f"warning: {message}", err=True)

    def _print(self, message: str, err: bool = False) -> None:
        message = redact_text(message)
        if self._progress is not None:
            self._progress.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=sys.stderr if err else self.stream, flush=True)

    # --- progress --------------------------------------------------------------------------------

    def start(self, total: int | None = None) -> None:
        """Start showing progress: on a terminal (not ``quiet``) a progress bar, which says
        'discovering, N found' until discovery ends (:meth:`discovery_done`), then documents
        done of found, pages, rate and ETA. ``total``: documents, when known at once."""
        if total is not None:
            self.discovery_done(total)
        if self.tty and not self.quiet:
            from rich.progress import BarColumn, Progress, TextColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
                                      transient=True, console=_console(self.stream))
            self._progress.start()
            self._task = self._progress.add_task("discovering", total=None, detail="")
            self.tick(force=True)

    def found(self, n: int) -> None:
        """Discovery has found ``n`` documents so far."""
        self.found_count = n

    def discovery_done(self, n: int) -> None:
        """Discovery ended with ``n`` documents: from now on the progress has a total and an ETA."""
        self.found_count = n
        self.discovery_ended = True

    @property
    def done(self) -> int:
        """Documents that reached their last word."""
        return self.counts["converted"] + self.counts["skipped"] + self.counts["failed"]

    def _rate(self) -> float:
        """Documents per second over the last minute (since the start in the first minute)."""
        now = time.monotonic()
        if not self._rates or now - self._rates[-1][0] >= 1.0:
            self._rates.append((now, self.done))
            while len(self._rates) > 61:
                self._rates.pop(0)
        t0, n0 = self._rates[0]
        if now - t0 < 1.0:
            t0, n0 = now - max(1e-3, time.time() - self.started), 0
        return (self.done - n0) / max(1e-3, now - t0)

    def progress_text(self) -> str:
        """One line of progress: ``'discovering, 1,234 found; 1,000 done (...); 12 pages; 3.4
        documents/s'`` while discovery walks, then ``'1,000 of 5,000 documents done (...);
        12 pages; 3.4 documents/s; ETA 20 m'``."""
        rate = self._rate()
        c = self.counts
        what = f"{c['converted']:,} converted, {c['skipped']:,} skipped, {c['failed']:,} failed"
        tail = f"{self.pages:,} pages; {rate:.1f} documents/s"
        if not self.discovery_ended:
            return f"discovering, {self.found_count:,} found; {self.done:,} done ({what}); {tail}"
        left = max(0, self.found_count - self.done)
        eta = _duration(left / rate) if rate > 0 else "unknown"
        return f"{self.done:,} of {self.found_count:,} documents done ({what}); {tail}; ETA {eta}"

    def tick(self, force: bool = False) -> None:
        """Called by the run's loop: refresh the bar; with ``quiet`` (or no bar and no line per
        document), a progress line every ``progress_every`` seconds."""
        now = time.monotonic()
        if self._progress is not None and self._task is not None:
            if not force and now - self._last_line < 0.1:
                return
            self._last_line = now
            total = self.found_count if self.discovery_ended else None
            desc = "converting" if self.discovery_ended else f"discovering, {self.found_count:,} found"
            text = self.progress_text()
            detail = text.split("; ", 1)[1] if not self.discovery_ended else text
            self._progress.update(self._task, total=total, completed=self.done, description=desc, detail=detail)
            return
        if self.quiet and self.progress_every > 0 and now - self._last_line >= self.progress_every:
            self._last_line = now
            print(redact_text(f"progress: {self.progress_text()}"), file=self.stream, flush=True)

    # --- documents -------------------------------------------------------------------------------

    def add(self, doc: DocumentReport) -> DocumentReport:
        """Register ``doc`` (its place in the report: discovery order); returns it."""
        self._open[id(doc)] = (self.total, doc)
        self.total += 1
        return doc

    def finished(self, doc: DocumentReport, advance: bool = True, show: bool = True) -> None:
        """A document reached its final status: count it, spool its report line, write its
        event, and print its line (``show``; per ``quiet``/``verbose`` and the terminal). A
        second call for the same document only prints."""
        if doc.status == "failed":
            log.error("failed %s: %s", doc.input, doc.reason)
        else:
            log.info("%s %s %s", doc.status, doc.input, doc.reason)
        held = self._open.pop(id(doc), None)
        if held is not None:
            self._count(doc)
            self._spool_doc(held[0], doc)
        if show:
            visible = doc.status == "failed" or not self.quiet and (doc.status == "converted" or not self.tty
                                                                      or self.verbose)
            if visible:
                self._print(self.line(doc), err=False)

    def _count(self, doc: DocumentReport) -> None:
        if doc.status in self.counts:
            self.counts[doc.status] += 1
        if doc.status == "converted":
            self.pages += doc.pages or 0
        if doc.quality and (doc.quality.get("no_text") or doc.quality.get("garbled_text")):
            self.flagged += 1
        if doc.rendered:
            self.rendered += 1

    def skipped(self, input: str, code: str | None, reason: str, tier: str | None, pages: int | None,
                output: str | None, kind: str | None) -> None:
        """:meth:`add` then :meth:`finished` (``advance=False``) of ``DocumentReport(input,
        status="skipped", code, reason, tier, pages, output=output, type=kind)``, without making
        one (:func:`skipped_json`): the report line, event, counts and printed line are the same."""
        log.info("%s %s %s", "skipped", input, reason)
        seq = self.total
        self.total += 1
        self.counts["skipped"] += 1
        if self._events is not None or self.keep:
            self._spool_line(seq, skipped_json(input, code, reason, tier, pages, output, kind))
        if not self.quiet and (not self.tty or self.verbose):
            self._print(f"{'skipped':<9}  {input}: {reason}", err=False)

    def _spool_doc(self, seq: int, doc: DocumentReport) -> None:
        self._spool_line(seq, document_json(doc))

    def _spool_line(self, seq: int, line: bytes) -> None:
        if self._events is not None:
            self._event(b'{"event": "document", ' + line[1:])
        if not self.keep:
            return
        line += _SEP  # each spooled line carries the report's separator: the report is copied in blocks
        offsets = self._offsets
        if len(offsets) == seq:  # the common case: documents end in discovery order
            offsets.append(self._spooled)
            self._lengths.append(len(line))
        else:
            if len(offsets) < seq:
                grow = seq + 1 - len(offsets)
                offsets.extend([-1] * grow)
                self._lengths.extend([0] * grow)
            offsets[seq] = self._spooled
            self._lengths[seq] = len(line)
        self._pending.append(line)
        self._spooled += len(line)
        self._pending_size += len(line)
        if self._pending_size >= 1 << 20:
            self._flush_spool()

    def _flush_spool(self) -> None:
        """Write the report lines held into the spool file (one write per megabyte)."""
        if not self._pending:
            return
        if self._spool is None:
            import tempfile

            self._spool = tempfile.TemporaryFile(prefix="mineru-cli-report-", buffering=0)
        self._spool.write(b"".join(self._pending))
        self._pending.clear()
        self._pending_size = 0

    @staticmethod
    def line(doc: DocumentReport) -> str:
        if doc.status == "converted" and doc.rendered:
            return (f"rendered   {doc.input}  ({', '.join(doc.rendered)} from the middle JSON, not converted again; "
                    f"{doc.seconds:.1f} s) -> {doc.output}")
        if doc.status == "converted":
            detail = f"{doc.pages} pages, " if doc.pages is not None else ""
            extra = f" [{', '.join(doc.warnings)}]" if doc.warnings else ""
            return f"converted  {doc.input}  ({detail}{doc.seconds:.1f} s, tier {doc.tier}) -> {doc.output}{extra}"
        return f"{doc.status:<9}  {doc.input}: {doc.reason}"

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # --- the events file -----------------------------------------------------------------------

    def open_events(self, path: str) -> None:
        """``--events FILE``: JSON Lines, one line per document as it ends
        (``{"event": "document", ...the report's document keys}``), after a first line
        ``{"event": "start", "started", "pid"}`` and before a last ``{"event": "summary", ...}``
        (the report's summary). The file is replaced at the start of the run; each line is
        written whole with one ``write`` to a file opened for appending, so a killed run's file
        is valid JSON Lines up to its last line. The run holds an exclusive ``flock`` on the file
        until it ends (the kernel drops it when the process dies): the file is emptied only once
        that lock is held, so a second run naming the same file cannot wipe the events of the
        one writing it. Raises OSError when it cannot be created, :class:`EventsBusy` when
        another live process holds it."""
        import fcntl

        parent = os.path.dirname(os.path.abspath(path))
        if os.path.exists(parent) and not os.path.isdir(parent):
            raise NotADirectoryError(errno.ENOTDIR, f"{parent} is a file, not a folder")
        os.makedirs(parent, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EventsBusy(path) from None
        os.ftruncate(fd, 0)
        self._events, self._events_size = fd, 0
        self._event(json.dumps({"event": "start", "started": round(self.started, 3), "pid": os.getpid()}).encode())

    def _event(self, line: bytes) -> None:
        """Append one line; a line the disk took only in part (full disk) is cut off again, so
        the file stays whole lines (the run holds the file: its size is ``_events_size``)."""
        data = line + b"\n"
        try:
            n = os.write(self._events, data)
            if n != len(data):
                raise OSError(errno.ENOSPC, f"only {n} of {len(data)} bytes written")
            self._events_size += n
        except OSError as exc:  # a full disk must not stop the run: the report still tells
            fd, self._events = self._events, None
            try:
                os.ftruncate(fd, self._events_size)
            except OSError:
                pass
            os.close(fd)
            self.warn(f"--events: cannot write the events file any more ({exc}); no more events")

    def close_events(self) -> None:
        """Write the summary line and close the events file (nothing without one)."""
        if self._events is None:
            return
        line = json.dumps(redact_data({"event": "summary", **self.summary()}), ensure_ascii=False)
        self._event(line.encode("utf-8", "backslashreplace"))
        if self._events is not None:
            os.close(self._events)
            self._events = None

    # --- summary and report --------------------------------------------------------------------

    def summary(self) -> dict:
        """The report's summary (see the module docstring); ``extra`` (set by convert) last."""
        return {
            **self.counts,
            "total": self.total,
            "pages": self.pages,
            "seconds": round(time.time() - self.started, 3),
            "flagged": self.flagged,
            "rendered": self.rendered,
            "started": round(self.started, 3),
            "interrupted": None,
            "dry_run": False,
            **self.extra,
        }

    def print_summary(self, interrupted: str | None = None) -> None:
        s = self.summary()
        head = "interrupted" if interrupted else "done"
        msg = (f"{head}: {s['converted']} converted, {s['skipped']} skipped, {s['failed']} failed "
               f"of {s['total']} documents; {s['pages']} pages in {s['seconds']:.1f} s")
        ignored = [f"{s[k]} {what}" for k, what in (("hidden_ignored", "hidden entries"),
                                                    ("results_ignored", "earlier result folders"))
                   if s.get(k)]
        if ignored:
            msg += f" ({' and '.join(ignored)} ignored)"
        if s.get("rendered"):
            msg += f"; {s['rendered']} of the converted only rendered new formats from their middle JSON"
        print(redact_text(msg), file=self.stream, flush=True)

    def _seal(self) -> None:
        """Spool the documents added and never finished (a dry run's documents to convert are
        'pending'), in their places."""
        for seq, doc in sorted(self._open.values(), key=lambda t: t[0]):
            self._spool_doc(seq, doc)
        self._open.clear()

    def write_report(self, fh) -> None:
        """Write the JSON report to the binary file ``fh``: the summary indented, then one line
        per document in discovery order, streamed from the spool (runs of documents spooled in
        order are copied in blocks). Secrets redacted (``redact.redact_data`` on the data: a
        secret holding ``"`` or ``\\`` is escaped in the text)."""
        self._seal()
        summary = json.dumps(redact_data(self.summary()), ensure_ascii=False, indent=2).replace("\n", "\n  ")
        fh.write(f'{{\n  "summary": {summary},\n  "documents": ['.encode("utf-8", "backslashreplace"))
        self._flush_spool()
        n = len(self._offsets)
        if n and self._spool is not None:
            fd = self._spool.fileno()
            fh.write(b"\n    ")
            offsets, lengths = self._offsets, self._lengths
            i = 0
            while i < n:  # a block: documents whose lines follow one another in the spool
                start = end = offsets[i]
                j = i
                while j < n and offsets[j] == end and end >= 0 and (end - start) < (4 << 20):
                    end += lengths[j]
                    j += 1
                if j == i:  # never spooled (cannot happen after _seal): left out
                    i += 1
                    continue
                block = os.pread(fd, end - start, start)
                fh.write(block if j < n else block[:-len(_SEP)])  # the last document: no separator
                i = j
            fh.write(b"\n  ")
        fh.write(b"]\n}\n")

    def json_text(self) -> str:
        """The JSON report as text (what :meth:`write_json` writes)."""
        import io

        buf = io.BytesIO()
        self.write_report(buf)
        return buf.getvalue().decode("utf-8")

    def as_dict(self) -> dict:
        """The JSON report as a dict (``{"summary": {...}, "documents": [...]}``), redacted, the
        same as reading back what :meth:`write_json` writes (the HTML report is drawn from it;
        it holds every document in memory)."""
        return json.loads(self.json_text())

    def write_html(self, path: str | None) -> None:
        """``--html-report FILE``: the run's report as one self-contained HTML file
        (``html_report.write_html_report``, drawn from :meth:`as_dict`); nothing without ``path``.
        A failure to write it is a warning (the run's result does not depend on it)."""
        if not path:
            return
        from .html_report import write_html_report

        try:
            write_html_report([self.as_dict()], path, base_dir=os.path.dirname(os.path.abspath(path)))
        except OSError as exc:
            self.warn(f"--html-report {path}: cannot write it: {exc}")

    def write_json(self, path: str) -> None:
        """Write the JSON report to a local ``path`` (atomic replace), streamed
        (:meth:`write_report`). (Indenting every document used Python's pure-Python JSON
        encoder, which ``indent`` forces: one compact line per document uses the C encoder.)"""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "wb", buffering=1 << 20) as fh:
            self.write_report(fh)
        os.replace(tmp, path)


def _duration(seconds: float) -> str:
    """``seconds`` as ``'45 s'``, ``'12 min'``, ``'3.2 h'``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _console(stream):
    from rich.console import Console

    return Console(file=stream)


def setup_logging(log_file: str | None, verbose: int) -> None:
    """``--log-file``: the full log (DEBUG with -v), tracebacks included; secrets redacted."""
    logger = logging.getLogger("mineru_cli")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        h = logging.FileHandler(log_file, encoding="utf-8", errors="backslashreplace")
        h.setLevel(logging.DEBUG if verbose else logging.INFO)

        class Redacting(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                return redact_text(super().format(record))

        h.setFormatter(Redacting("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(h)
    else:  # nothing reads the log: no records made at all (a rerun logs a line per document)
        logger.setLevel(logging.CRITICAL + 1)
        logger.addHandler(logging.NullHandler())
