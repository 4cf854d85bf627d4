"""``convert``: discover -> plan -> run -> store -> report, and the exit code.

This module only wires the rooms together, top to bottom in :func:`_run_convert`: open OUTPUT
(``store``), walk the inputs (``discover``), probe OUTPUT, read the done-records and type the
inputs (``records``, ``sniff``), choose backend and tier (``backend``), plan (``plan``), then
``plan.dry_run`` or the batch under the writer lock (``run.run_batch``).

Must not: hold any room's rules (what a document needs, how a result is committed, how tasks
run), import an executor, or import anything heavy at module level.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from .discover import discover
from .errors import EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, EnvironmentProblem, OutputLocked, UsageError
from .jobs import Lane
from .plan import PlannedDocument, dry_run, plan
from .records import needs_new_mtime
from .report import DocumentReport, Reporter, setup_logging
from .run import LATE_SIGNALS, run_batch
from .settings import Settings
from .sniff import IMAGE_TYPES, PDF_TYPES
from .store import Output, RunLock, open_output, probe_writable


class RunInterrupted(BaseException):
    """SIGINT/SIGTERM received before the batch started (discovering, planning, locking)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def run_convert(s: Settings) -> int:
    """Run a conversion with settings ``s``; returns the exit code (see errors.py).

    Raises UsageError (2), EnvironmentProblem (3) or OutputLocked (4) before the batch starts.
    SIGINT/SIGTERM before the batch starts (discovering and planning a large folder take a
    while) stop at once: the report lists what was found as not started, exit 130/143. Once
    documents are converting, ``run.run_batch`` handles the signals (grace period, then kill).
    """
    state: dict = {}
    LATE_SIGNALS.clear()

    def interrupt(signum, _frame) -> None:
        if not state.get("converting"):
            raise RunInterrupted(signum)
        LATE_SIGNALS.append(signum)  # between the lock and run_batch's own handlers: it takes them

    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run_convert(s, state)
    except RunInterrupted as exc:
        state["converting"] = True  # a second signal while writing the report is ignored
        return _interrupted_before_start(exc.signum, s, state)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _run_convert(s: Settings, state: dict) -> int:
    """``run_convert``'s body; ``state`` collects what an interrupt before the batch needs
    (``rep``, ``found``, ``planned``) and ``converting`` once ``run_batch`` handles signals."""
    if not s.inputs:
        raise UsageError("no input given")
    if not s.output:
        raise UsageError("no output given (-o OUTPUT)")
    if s.html_report and s.report:
        from .html_report import check_html_target

        check_html_target(s.html_report, [s.report], "--html-report")
    setup_logging(s.log_file, s.verbose)
    rep = state["rep"] = Reporter(quiet=s.quiet, verbose=s.verbose)
    from .redact import redact_url, register_settings_secrets

    register_settings_secrets(s)  # again, for callers that build Settings without load_settings
    if "html" in s.format and "images" not in s.format:
        rep.warn("--format html without images: the HTML pages link their pictures from images/, which is "
                 "not written; add images to --format to keep them")
    out = _open_output(s)
    rep.extra["output"] = {"url": redact_url(s.output), "local_root": out.root if out.is_local else None}
    found = state["found"] = _discover(s, out, rep)
    ensure_writable = _output_probe(s, out, rep)
    # done-records, then the inputs that must be read: a finished document that is unchanged
    # (size and mtime, or size and ETag) takes its type from its done-record and is not read
    keys, records = _read_records_and_type_inputs(found.documents, s, out, ensure_writable)
    # backend and tier (only probed when some document's tier matters)
    needs_tier = any((d.kind in PDF_TYPES or d.kind in IMAGE_TYPES) and not d.problem for d in found.documents)
    lanes, tier, backend_label = _choose_backend_and_tier(s, rep, needs_tier)
    planned = state["planned"] = plan(found.documents, s, out, tier, keys=keys, records=records,
                                      input_options=_input_options(s), missing_files=_result_checker(s, out))
    _spread_long_documents(s, planned, lanes, rep)
    if s.dry_run:
        dry_run(planned, out, rep, s.report)
        rep.write_html(s.html_report)
        return EXIT_OK

    def batch(refresh_mtimes: bool = True) -> int:
        state["converting"] = True  # from here run_batch handles SIGINT/SIGTERM
        return run_batch(s, out, planned, lanes, tier, backend_label, rep, found.hidden_ignored,
                         refresh_mtimes=refresh_mtimes)

    if not any(p.action in ("convert", "commit", "render") for p in planned):
        return _without_writing(planned, out, rep, batch)
    ensure_writable()
    with _writer_lock(s, out, rep):
        return batch()


def _open_output(s: Settings) -> Output:
    """``store.open_output`` with OUTPUT's storage settings; EnvironmentProblem (exit 3) when it
    cannot be opened (unknown protocol, s3fs missing, bad options)."""
    options, endpoint = s.output_storage()
    try:
        return open_output(s.output, storage_options=options, staging_dir=s.staging_dir, endpoint_url=endpoint)
    except Exception as exc:  # noqa: BLE001
        from .redact import redact_text, redact_url

        hint = (" (install the S3 support: pip install 'mineru-cli[s3]')"
                if isinstance(exc, ModuleNotFoundError) and s.output.startswith("s3") else "")
        raise EnvironmentProblem(redact_text(f"output {redact_url(s.output)}: cannot open: "
                                             f"{type(exc).__name__}: {exc}{hint}")) from None


def _discover(s: Settings, out: Output, rep: Reporter):
    """``discover.discover`` of the inputs (listed, not read yet), OUTPUT left out of them;
    UsageError when no input exists at all."""
    skip_paths = [out.root] if out.is_local else [out.url]
    found = discover(s.inputs, include=s.include, exclude=s.exclude, hidden=s.hidden,
                     follow_symlinks=s.follow_symlinks, skip_paths=skip_paths, storage_options=_input_options(s),
                     sniff=False)
    rep.extra["results_ignored"] = found.results_ignored
    for item, reason in found.errors:
        rep.warn(reason)
    missing_inputs = [i for i, _ in found.errors if i in s.inputs]
    if missing_inputs and not found.documents:
        raise UsageError(f"input {missing_inputs[0]}: not found or not readable")
    return found


def _output_probe(s: Settings, out: Output, rep: Reporter) -> Callable[[], None]:
    """Check OUTPUT is readable, before anything reads done-records from it, and return
    ``ensure_writable()``: the write probe, made once, as soon as the run knows it will write
    there (a document without a done-record, --force, or after planning; at once when OUTPUT
    is missing or empty), so a rerun over a finished OUTPUT writes nothing there, not even a probe."""
    first_run = _probe_output(s, out, write=False)
    probed = False

    def ensure_writable() -> None:
        nonlocal probed
        if not probed and not s.dry_run:
            _probe_output(s, out, write=True)
            probed = True

    if first_run:  # OUTPUT missing or empty: this run will write there
        ensure_writable()
    options, endpoint = s.output_storage()
    if not out.is_local or options or endpoint:
        from .storage import describe_storage

        rep.info(describe_storage(s.output, options, endpoint, None if out.is_local else out.staging_root))
    return ensure_writable


def _spread_long_documents(s: Settings, planned: list[PlannedDocument], lanes: list[Lane], rep: Reporter) -> None:
    """--window-pages not given anywhere: a PDF longer than its share of the run is split among
    the workers (``windows.spread_long_documents``; an explicit --window-pages is taken as it is)."""
    if s.window_pages and "window_pages" not in s.model_fields_set:
        from .windows import spread_long_documents

        workers = sum(l.workers for l in lanes)
        for rel in spread_long_documents(planned, workers, max_window=s.window_pages):
            rep.info(f"{rel}: split into page windows for {workers} workers")


def _without_writing(planned: list[PlannedDocument], out: Output, rep: Reporter, batch: Callable[..., int]) -> int:
    """Nothing to convert, commit or render: no write probe and no writer lock, so a rerun over a
    finished OUTPUT also works while another run writes there, or on a read-only OUTPUT.
    Touched inputs' done-records get their new time only if the lock is free."""
    touched = any(needs_new_mtime(p) for p in planned)
    lock = _try_lock(out) if touched else None
    if touched and lock is None:
        rep.info("modification times in done-records not updated: OUTPUT is locked by another run "
                 "or not writable; the next run hashes those inputs again")
    try:
        return batch(refresh_mtimes=lock is not None)
    finally:
        if lock is not None:
            lock.release()


class _writer_lock:
    """The writer lock of OUTPUT for the batch (``store.RunLock``); OutputLocked (exit 4) when
    another run holds it. A lock left by a killed run is taken over, with a line saying so."""

    def __init__(self, s: Settings, out: Output, rep: Reporter) -> None:
        self.s, self.out, self.rep = s, out, rep

    def __enter__(self) -> RunLock:
        lock = self.lock = RunLock(self.out.lock_dir)
        if not lock.acquire():
            holder = lock.holder() or {}
            raise OutputLocked(f"another mineru-cli run (pid {holder.get('pid', '?')} on {holder.get('host', '?')}) "
                               f"is writing to {self.s.output}; wait for it to finish or use another OUTPUT")
        if lock.previous:
            self.rep.info(f"taking over the lock of a run that is gone (pid {lock.previous.get('pid')})")
        return lock

    def __exit__(self, *exc) -> None:
        self.lock.release()


def _probe_output(s: Settings, out: Output, write: bool) -> bool:
    """``store.probe_writable`` (True: OUTPUT holds nothing yet). A failure is EnvironmentProblem
    (exit 3), one line: "is not readable" for --dry-run, else "is not writable" (what a convert
    run needs, even when the read probe is the one that failed: no bucket, no access, no endpoint)."""
    try:
        return probe_writable(out, write=write)
    except Exception as exc:  # noqa: BLE001
        from .redact import redact_url
        from .storage import explain_storage_error

        raise EnvironmentProblem(f"output {redact_url(s.output)} is not {'readable' if s.dry_run else 'writable'}: "
                                 f"{explain_storage_error(exc, s.output)}") from None


def _try_lock(out: Output) -> RunLock | None:
    """The writer lock if it is free and can be taken (OUTPUT writable), else None."""
    try:
        lock = RunLock(out.lock_dir)
        return lock if lock.acquire() else None
    except OSError:
        return None


def _read_records_and_type_inputs(documents: list, s: Settings, out: Output,
                                  new_work: Callable[[], None] | None = None) -> tuple[list[str], dict[str, dict | None]]:
    """The output keys of ``documents`` (``store.assign_output_keys``, same order) and their
    done-records by key (none with ``--force``; EnvironmentProblem when the storage fails); and
    the type of every document discovery left unread: from its done-record when it is unchanged
    (``plan.kind_from_done_record``), else by reading it (``sniff.sniff_documents``).
    ``new_work`` is called before reading the inputs when some document has no done-record
    (or ``--force``): the run will write to OUTPUT (the write probe, so it fails before the reads)."""
    from .plan import kind_from_done_record
    from .records import read_done_records
    from .sniff import sniff_documents
    from .store import assign_output_keys, fail_names_remote_output_cannot_hold

    keys = assign_output_keys([d.rel for d in documents])
    if not out.is_local:
        fail_names_remote_output_cannot_hold(documents, keys)
    try:
        records = {} if s.force else read_done_records(out, [k for d, k in zip(documents, keys) if not d.problem])
    except Exception as exc:  # noqa: BLE001 - the storage failed after the probe passed (one line, exit 3)
        from .redact import redact_url
        from .storage import explain_storage_error

        raise EnvironmentProblem(f"output {redact_url(s.output)}: cannot read the done-records: "
                                 f"{explain_storage_error(exc, s.output)}") from None
    if new_work is not None and any(records.get(k) is None for d, k in zip(documents, keys) if not d.problem):
        new_work()
    for d, k in zip(documents, keys):
        if d.extra.get("unread") is True:
            kind_from_done_record(d, records.get(k))
    sniff_documents(documents, _input_options(s))
    return keys, records


def _result_checker(s: Settings, out: Output):
    """``records.result_checker`` for the plan, its storage errors turned into one line, exit 3
    (as for the done-records)."""
    from .records import result_checker

    check = result_checker(out)

    def missing(key: str, record: dict) -> list[str]:
        try:
            return check(key, record)
        except Exception as exc:  # noqa: BLE001
            from .redact import redact_url
            from .storage import explain_storage_error

            raise EnvironmentProblem(f"output {redact_url(s.output)}: cannot list the results: "
                                     f"{explain_storage_error(exc, s.output)}") from None
    return missing


def _input_options(s: Settings) -> dict:
    """The inputs' storage options with their endpoint as the ``endpoint_url`` option (what
    ``discover`` and ``sniff`` hand to ``storage``)."""
    opts, endpoint = s.input_storage()
    opts = dict(opts)
    if endpoint:
        opts["endpoint_url"] = endpoint
    return opts


def _choose_backend_and_tier(s: Settings, rep: Reporter, needs_tier: bool) -> tuple[list[Lane], str, str]:
    """Probe the machine and decide backend, tier and worker lanes (backend.py).

    When the tier is flash whatever the probes say, no model runs: the CPU lanes are used without
    probing GPUs, engines or weights (``backend.flash_without_probing``).
    """
    from .backend import decide_backend, flash_without_probing, probe_machine, worker_lanes

    decision = flash_without_probing(s, needs_tier)
    if decision is None:
        machine = probe_machine(s)
        decision = decide_backend(s, machine)
    for w in decision.warnings:
        rep.warn(w)
    lanes = [Lane(label=l.label, env=dict(l.env), workers=l.workers) for l in worker_lanes(decision, s)]
    tier, why = decision.tier or "flash", decision.tier_reason
    workers = sum(l.workers for l in lanes)
    rep.info(f"tier: {tier} ({why}); backend: {decision.backend}; workers: {workers}")
    rep.extra["decision"] = {"backend": decision.backend, "tier": tier, "tier_reason": why,
                             "reasons": list(decision.reasons), "rejected": dict(decision.rejected),
                             "warnings": list(decision.warnings)}
    return lanes, tier, decision.backend


def _interrupted_before_start(signum: int, s: Settings, state: dict) -> int:
    """Report (every document found: not started) and exit code of a run interrupted before
    any document was sent to a worker."""
    name = signal.Signals(signum).name
    rep = state.get("rep") or Reporter(quiet=s.quiet, verbose=s.verbose)
    rep.warn(f"received {name} before any document was converted: stopping")
    known = {d.input for d in rep.docs}
    not_started = f"not started: run interrupted by {name}; a rerun resumes"
    planned = state.get("planned")
    found = state.get("found")
    if planned is not None:
        for p in planned:
            if p.source.rel in known:
                continue
            if p.action in ("skip", "fail"):
                rep.add(DocumentReport(input=p.source.rel, status=p.status or "skipped", code=p.code,
                                       reason=p.reason, tier=p.tier, pages=p.pages))
            else:
                rep.add(DocumentReport(input=p.source.rel, status="skipped", code="interrupted",
                                       reason=not_started, tier=p.tier, pages=p.pages))
    elif found is not None:
        for d in found.documents:
            if d.rel not in known:
                rep.add(DocumentReport(input=d.rel, status="skipped", code="interrupted", reason=not_started))
    rep.stop()
    rep.extra["interrupted"] = name
    if s.report:
        rep.write_json(s.report)
    rep.write_html(s.html_report)
    rep.print_summary(interrupted=name)
    return EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM
