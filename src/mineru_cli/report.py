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

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field, fields
from typing import Any

from .redact import redact_data, redact_text

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


class Reporter:
    """Collects DocumentReports and prints progress. ``quiet``: only failures and summary;
    ``verbose``: also skipped documents' lines on a terminal."""

    def __init__(self, *, quiet: bool = False, verbose: int = 0, stream=None) -> None:
        self.quiet, self.verbose = quiet, verbose
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.docs: list[DocumentReport] = []
        self.started = time.time()
        self._progress = None
        self._task = None
        self.extra: dict[str, Any] = {}

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

    def start(self, total: int | None = None) -> None:
        """Show a progress bar on a terminal for ``total`` documents to convert."""
        if self.tty and not self.quiet and total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("converting"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("{task.description}"), transient=True)
            self._progress.start()
            self._task = self._progress.add_task("", total=total)

    @property
    def counts(self) -> dict:
        return {s: sum(1 for d in self.docs if d.status == s) for s in ("converted", "skipped", "failed")}

    def found(self, n: int) -> None:
        pass

    def discovery_done(self, n: int) -> None:
        pass

    def tick(self) -> None:
        pass

    def add(self, doc: DocumentReport) -> DocumentReport:
        self.docs.append(doc)
        return doc

    def finished(self, doc: DocumentReport, advance: bool = True) -> None:
        """A document reached its final status: print its line."""
        if doc.status == "failed":
            log.error("failed %s: %s", doc.input, doc.reason)
        else:
            log.info("%s %s %s", doc.status, doc.input, doc.reason)
        if self._progress is not None and advance and self._task is not None:
            self._progress.update(self._task, advance=1, description=doc.input[-40:])
        show = doc.status == "failed" or not self.quiet and (doc.status == "converted" or not self.tty or self.verbose)
        if show:
            self._print(self.line(doc), err=False)

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

    def summary(self) -> dict:
        """The report's summary (see the module docstring); ``extra`` (set by convert) last."""
        counts = {s: sum(1 for d in self.docs if d.status == s) for s in ("converted", "skipped", "failed")}
        return {
            **counts,
            "total": len(self.docs),
            "pages": sum(d.pages or 0 for d in self.docs if d.status == "converted"),
            "seconds": round(time.time() - self.started, 3),
            "flagged": sum(1 for d in self.docs if d.quality and (d.quality.get("no_text") or d.quality.get("garbled_text"))),
            "rendered": sum(1 for d in self.docs if d.rendered),
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

    def json_text(self) -> str:
        """The JSON report as text, secrets redacted (``redact.redact_data``, on the data before
        it is serialized: a secret holding ``"`` or ``\\`` is escaped in the text): what
        :meth:`write_json` writes."""
        summary = json.dumps(redact_data(self.summary()), ensure_ascii=False, indent=2).replace("\n", "\n  ")
        names = [f.name for f in fields(DocumentReport)]
        lines = ",\n    ".join(json.dumps(redact_data({n: getattr(d, n) for n in names}), ensure_ascii=False)
                                for d in self.docs)
        body = f"\n    {lines}\n  " if lines else ""
        return f'{{\n  "summary": {summary},\n  "documents": [{body}]\n}}\n'

    def as_dict(self) -> dict:
        """The JSON report as a dict (``{"summary": {...}, "documents": [...]}``), redacted, the
        same as reading back what :meth:`write_json` writes (the HTML report is drawn from it)."""
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
        """Write the JSON report to a local ``path`` (atomic replace): the summary indented,
        then one line per document. (Indenting every document used Python's pure-Python JSON
        encoder, which ``indent`` forces, plus a deep copy per document: 0.15 s of a 1 s rerun
        over 1,000 documents; one compact line per document uses the C encoder.)"""
        text = self.json_text()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as fh:  # a name that is not valid UTF-8 as its JSON escape (records.json_bytes)
            fh.write(text.encode("utf-8", "backslashreplace"))
        os.replace(tmp, path)


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
