"""Per document: skip, convert, commit (staged earlier) or fail; tier, page windows, output.

Cheap checks happen here, before a document reaches a worker: size limit, sniffed type,
encrypted Office file, and for PDFs the page count, encryption and readability through
PDFium (pypdfium2, the library MinerU itself opens PDFs with), bounded by a time limit.

Must not: read or write OUTPUT itself (done-records come in from ``records``), run MinerU,
or know how tasks are executed.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

from .sniff import (CONVERTIBLE_TYPES, FLASH_ONLY_TYPES, IMAGE_TYPES, PDF_TYPES, SourceDocument, fingerprint_local,
                    pdf_probe)
from .record_index import file_entries, files_well_formed, is_slim
from .records import Finished, read_staged_record
from .store import RENDER_SUFFIXES, Output, doc_id, output_stem
from .windows import contiguous_ranges, make_windows, parse_page_ranges


@dataclass
class PlannedDocument:
    """One input and what the run does with it.

    ``action``: ``convert`` | ``commit`` (a finished staging folder from an earlier run is only
    committed) | ``render`` (a finished result gets ``render_formats`` rendered from its middle
    JSON, nothing converted: :func:`render_only_formats`) | ``skip`` | ``fail``. ``windows``: 1-based inclusive page ranges, empty for a
    single task. ``settings_key``: the settings that affect the output (in the done-record).
    """

    source: SourceDocument
    key: str
    stem: str
    action: str = "convert"
    status: str | None = None  # final status for skip/fail
    code: str | None = None
    reason: str = ""
    tier: str | None = None
    ocr_mode: str = "txt"
    pages: int | None = None
    page_range: str = ""
    windows: list[tuple[int, int]] = field(default_factory=list)
    fingerprint: str | None = None
    settings_key: dict = field(default_factory=dict)
    record: dict | None = None
    input_unchanged: bool | None = None  # set by the done-record check: the record is of these bytes
    render_formats: list[str] = field(default_factory=list)  # action "render": formats to render
    fresh: bool = False  # OUTPUT held no result files in this folder when the run listed it (store.commit)

    @property
    def id(self) -> str:
        return doc_id(self.key)

    @property
    def selected_pages(self) -> int | None:
        """Pages that will be converted: those of ``page_range`` (``--pages``), else ``pages``."""
        if not self.page_range or self.pages is None:
            return self.pages
        return len(parse_page_ranges(self.page_range, self.pages))


def settings_key(s, tier: str, ocr_mode: str, kind: str | None = "pdf") -> dict:
    """The settings that change a document's output: recorded in the done-record and
    compared on reruns (a change reconverts). ``--pages`` only counts for PDFs (MinerU's
    page_range applies to PDFs only)."""
    return {"tier": tier, "ocr_mode": ocr_mode, "formats": sorted(s.format),
            "pages": (s.pages or "") if kind in PDF_TYPES else ""}


def finished_expectations(s, run_tier: str) -> dict[str, str] | None:
    """``{type: settings text}`` (``record_index.settings_text`` of :func:`settings_key` at the
    tier a document of that type gets in this run) for every convertible type: what the stat
    helper compares a done-record index entry with to find a document finished
    (``statcheck``, ``records.Finished``). None when a finished document is not judged without
    reading (``MINERU_CLI_TRUST_MTIME=0``: the content hash decides, here)."""
    from .record_index import settings_text

    if not _trust_mtime():
        return None
    out = {}
    for kind in sorted(CONVERTIBLE_TYPES):
        tier, ocr_mode = tier_of(kind, run_tier)
        out[kind] = settings_text(settings_key(s, tier, ocr_mode, kind))
    return out


def plan(documents: list[SourceDocument], s, out: Output, run_tier: str, *, keys: list[str],
         records: dict[str, dict | None], input_options: dict | None = None,
         missing_files=None) -> list[PlannedDocument]:
    """Decide what to do with each document (same order as ``documents``).

    ``s``: Settings; ``run_tier``: the tier resolved for the run (PDFs/images use it;
    Office/HTML/EPUB/CSV always use flash); ``keys``: the output keys of ``documents``
    (``store.assign_output_keys``); ``records``: their done-records by key
    (``records.read_done_records``; empty with ``--force``); ``missing_files``: a function
    ``(key, record) -> [names]`` of a finished result's files that are gone
    (``records.result_checker``; None: not checked). Never raises for a document's problem
    (``missing_files`` may raise the storage's error).

    Order, cheapest first, so a rerun over finished documents costs a done-record read each:
    the checks that need no reading (type), then the done-record, and only for documents that
    are not finished the size limit, the PDF page count (PDFium) and, for a PDF whose type
    came from its done-record (:func:`kind_from_done_record`), reading it
    (``input_options``: the storage options of remote inputs).
    """
    planned: list[PlannedDocument] = []
    to_decide: list[PlannedDocument] = []
    keys_made: dict[tuple, dict] = {}  # settings_key by (tier, ocr_mode, is a PDF): one dict each, copied
    copied = False  # records copied here (a Finished not taken)
    for d, key in zip(documents, keys):
        p = PlannedDocument(source=d, key=key, stem=output_stem(d.rel))
        planned.append(p)
        record = records.get(key)
        if record.__class__ is Finished:  # judged finished in the stat helper
            if d.kind == record.kind and not d.problem:
                _set_tier(p, run_tier)
                p.action, p.status, p.code, p.reason = "skip", "skipped", "done", DONE_REASON
                p.pages = record.pages
                continue
            # another type than the helper judged (never: the pipeline asks only about inputs
            # typed from their done-record): not taken as finished, decided as without a record
            if not copied:
                records, copied = dict(records), True
            records[key] = None
        if _has_problem(p):
            continue
        _set_tier(p, run_tier)
        made = (p.tier or "flash", p.ocr_mode, d.kind in PDF_TYPES)
        if made not in keys_made:
            keys_made[made] = settings_key(s, made[0], made[1], d.kind)
        p.settings_key = dict(keys_made[made])
        to_decide.append(p)
    render = s.executor == "local"  # a Ray worker commits what it converts: no render-only commits there
    not_done = [p for p in to_decide if s.force or not _already_done(p, records.get(p.key), missing_files, render)]
    # typed from its done-record but converted again: only a PDF needs reading (its page count);
    # the others are the same bytes as when they were typed, so their type stands
    reread = [p for p in not_done if p.source.extra.get("unread") and (p.source.kind or "") in PDF_TYPES]
    for p in not_done:
        p.source.extra.pop("unread", None)
    if reread:
        from .sniff import sniff_documents

        kinds = [p.source.kind for p in reread]
        for p in reread:
            p.source.extra["unread"] = True
        sniff_documents([p.source for p in reread], input_options)
        for p, kind in zip(reread, kinds):
            if p.source.kind != kind and not p.source.problem:  # not what the record said: decide again
                _set_tier(p, run_tier)
                p.settings_key = settings_key(s, p.tier or "flash", p.ocr_mode, p.source.kind)
                if not s.force and _already_done(p, records.get(p.key), missing_files, render):
                    not_done.remove(p)
    for p in not_done:
        if _has_problem(p):
            continue
        if not s.force and _same_pages_as_record(p, records.get(p.key), missing_files):
            continue
        if _too_large(p, s) or _fails_on_pages(p, s):
            continue
        _decide_staged(p, s, out)
    return planned


def _same_pages_as_record(p: PlannedDocument, record: dict | None, missing_files=None) -> bool:
    """A finished PDF whose done-record differs from this run only in ``--pages``, where both
    specs select the same pages of this PDF (``2,3,5`` and ``2-3,5``; ``1-1000`` and none on a
    5-page PDF): skipped as done, like :func:`_already_done`. Reads the page count (PDFium
    for a local file, discovery's probe for a remote one) only in that case."""
    d = p.source
    if record is None or not p.input_unchanged or (d.kind or "") not in PDF_TYPES:
        return False
    old, new = dict(record.get("settings") or {}), dict(p.settings_key)
    old_spec, new_spec = old.pop("pages", "") or "", new.pop("pages", "") or ""
    if old != new or old_spec == new_spec:
        return False
    if d.is_local:
        d.extra["probe"] = pdf_probe(d.uri)  # kept for _fails_on_pages: the PDF is opened once
        pages = d.extra["probe"][0]
    else:
        pages = d.extra.get("pages")
    if not pages:
        return False
    try:
        before = parse_page_ranges(old_spec, pages) if old_spec else list(range(pages))
        now = parse_page_ranges(new_spec, pages) if new_spec else list(range(pages))
    except ValueError:
        return False
    if not now or before != now or (missing_files and missing_files(p.key, record)):
        return False
    _mark_done(p, record, f"already converted (done-record matches input and settings; --pages {new_spec or 'all'} "
                          f"selects the same pages)", pages)
    return True


DONE_REASON = "already converted (done-record matches input and settings)"


def _mark_done(p: PlannedDocument, record: dict, reason: str, pages: int | None) -> None:
    """Skip ``p`` as finished by ``record`` (its page count, else ``pages``)."""
    p.action, p.status, p.code, p.reason = "skip", "skipped", "done", reason
    p.record = record
    p.pages = record.get("pages", pages)


def _has_problem(p: PlannedDocument) -> bool:
    """Discovery's problem (type, encryption, empty, unreadable...): sets ``p`` to fail or skip
    and returns True."""
    d = p.source
    if d.problem:
        p.action, p.code, p.reason = "fail" if d.fatal else "skip", d.code, d.problem
        p.status = "failed" if d.fatal else "skipped"
        return True
    return False


def _too_large(p: PlannedDocument, s) -> bool:
    """``--max-file-size``, for a document that is to be converted (a finished one stays
    finished, like with ``--max-pages``): sets ``p`` to fail and returns True."""
    d = p.source
    if s.max_file_size and d.size > s.max_file_size:
        p.action, p.status, p.code = "fail", "failed", "too_large"
        p.reason = f"too large: {d.size:,} bytes > --max-file-size {s.max_file_size:,}"
        return True
    return False


def tier_of(kind: str | None, run_tier: str) -> tuple[str, str]:
    """(tier, OCR mode) of a document of type ``kind`` in a run at ``run_tier``: Office, HTML,
    EPUB and CSV always flash (text), PDFs and images the run's tier (``auto`` OCR above flash)."""
    if (kind or "") in FLASH_ONLY_TYPES:
        return "flash", "txt"
    return run_tier, "txt" if run_tier == "flash" else "auto"


def _set_tier(p: PlannedDocument, run_tier: str) -> None:
    p.tier, p.ocr_mode = tier_of(p.source.kind, run_tier)


def _fails_on_pages(p: PlannedDocument, s) -> bool:
    """PDFs: page count (PDFium for a local file, discovery's probe for a remote one),
    ``--pages``, ``--max-pages``, page windows; images: one page. Sets ``p`` to fail and
    returns True for an encrypted/corrupt PDF or a page limit."""
    d = p.source
    kind = d.kind or ""
    if kind in IMAGE_TYPES:
        p.pages = 1
        return False
    if kind not in PDF_TYPES:
        return False
    if d.is_local:
        pages, code, reason = d.extra.pop("probe", None) or pdf_probe(d.uri)
    else:
        pages, code, reason = d.extra.get("pages"), None, None
    if code:
        p.action, p.status, p.code, p.reason = "fail", "failed", code, reason
        return True
    p.pages = pages
    if pages is None:
        return False
    indices = list(range(pages))
    if s.pages:
        try:
            indices = parse_page_ranges(s.pages, pages)
        except ValueError as exc:
            p.action, p.status, p.code, p.reason = "fail", "failed", "bad_page_range", f"--pages: {exc}"
            return True
        if not indices:
            p.action, p.status, p.code = "fail", "failed", "bad_page_range"
            p.reason = f"--pages {s.pages} selects no page of this {pages}-page PDF"
            return True
        p.page_range = ",".join(f"{a}-{b}" if a != b else str(a) for a, b in contiguous_ranges(indices))
    n_selected = len(indices)
    if s.max_pages and n_selected > s.max_pages:
        p.action, p.status, p.code = "fail", "failed", "too_many_pages"
        p.reason = f"too many pages: {n_selected:,} > --max-pages {s.max_pages:,}"
        return True
    if s.window_pages and n_selected > s.window_pages:
        p.windows = make_windows(indices, s.window_pages)
    return False


def _same_input(record: dict, d: SourceDocument) -> tuple[bool, str | None]:
    """Compare a record's input fingerprint with the file: size first, then (local files)
    the modification time, then the content hash, computed only when the size matches and the
    time does not. Returns (same, fingerprint)."""
    rin = record.get("input")
    if not isinstance(rin, dict) or rin.get("size") != d.size:
        return False, None
    if not d.is_local:
        return unchanged_without_reading(record, d), None
    if unchanged_without_reading(record, d):
        return True, rin.get("fingerprint")
    fp = fingerprint_local(d.uri)
    return rin.get("fingerprint") == fp, fp


def unchanged_without_reading(record: dict | None, d: SourceDocument) -> bool:
    """Whether ``d`` is the input ``record`` was made from, judged without reading it: same
    size and ETag for a remote object; same size and modification time, with a recorded
    content hash, for a local file (unless ``MINERU_CLI_TRUST_MTIME=0``: then only the hash
    counts, so never without reading)."""
    rin = (record or {}).get("input") or {}
    if not isinstance(rin, dict) or rin.get("size") != d.size:
        return False
    if not d.is_local:
        return bool(d.etag) and rin.get("etag") == d.etag
    return rin.get("mtime") == d.mtime and bool(rin.get("fingerprint")) and _trust_mtime()


@functools.lru_cache(maxsize=1)
def _trust_mtime() -> bool:
    """``MINERU_CLI_TRUST_MTIME`` (default 1), read once per process."""
    return os.environ.get("MINERU_CLI_TRUST_MTIME", "1") == "1"


def kind_from_done_record(d: SourceDocument, record: dict | None) -> bool:
    """Type a document that discovery listed but did not read (``extra["unread"]``) from its
    done-record, when it is unchanged (:func:`unchanged_without_reading`): the type was
    sniffed from these same bytes then. Returns whether it did; the document stays marked
    ``extra["unread"] = "kind from done-record"`` so the plan reads it after all if it has to
    be converted again (changed settings: a PDF's page count is needed). A ``records.Finished``
    gives its type (the helper compared it the same way)."""
    if record.__class__ is Finished:
        if d.extra.get("unread") is not True:
            return False
        d.kind = record.kind
        d.extra["unread"] = "kind from done-record"
        return True
    rin = (record or {}).get("input")
    kind = rin.get("type") if isinstance(rin, dict) else None
    if d.extra.get("unread") is not True or not isinstance(kind, str) or kind not in CONVERTIBLE_TYPES \
            or not unchanged_without_reading(record, d):
        return False
    d.kind = kind
    d.extra["unread"] = "kind from done-record"
    return True


def render_only_formats(record: dict, key: dict, stem: str) -> list[str]:
    """The formats a finished result can get by rendering its middle JSON, with no conversion:
    non-empty only when ``key`` (this run's ``settings_key``) differs from the done-record's
    settings in nothing but formats added, every added format is one ``mineru.render`` makes
    from a middle JSON (``store.RENDER_SUFFIXES``: html, latex, docx, content_list_v2), the
    record lists the middle JSON (``<stem>_middle.json``: ``--format middle`` then), and for
    ``docx`` also the images (``--format images`` then: DOCX embeds them). In RENDER_SUFFIXES'
    order; ``[]`` means convert again as usual."""
    old, new = dict(record.get("settings") or {}), dict(key)
    had, want = set(old.pop("formats", None) or []), set(new.pop("formats", None) or [])
    added = want - had
    if old != new or not had <= want or not added or not added <= set(RENDER_SUFFIXES) or "middle" not in had:
        return []
    if "docx" in added and "images" not in had:
        return []
    names = {f["name"] for f in file_entries(record)}
    if f"{stem}_middle.json" not in names:
        return []
    return [f for f in RENDER_SUFFIXES if f in added]


def _already_done(p: PlannedDocument, record: dict | None, missing_files=None, render: bool = True) -> bool:
    """Whether ``record`` (the done-record of ``p``'s output folder, None when there is none)
    is for this input and these settings, and the files it lists are all there with their sizes
    (``missing_files``, see :func:`plan`): then ``p`` is skipped (no page probe, no read).
    With ``render``, a finished result that only lacks formats rendered from its middle JSON
    (:func:`render_only_formats`) is decided too: action ``render``. Otherwise ``p.reason``
    says what changed."""
    if record is None:
        return False
    # damaged by hand or by a tool: not a record of ours (a slim record from the index was
    # checked when it was indexed, and lists only plain names: maybe none)
    if not is_slim(record) and not files_well_formed(record):
        p.reason = "done-record damaged (its files are not a list of files): converted again"
        return False
    same, fp = _same_input(record, p.source)
    p.input_unchanged = same
    settings_same = record.get("settings") == p.settings_key
    renders = render_only_formats(record, p.settings_key, p.stem) if render and same and not settings_same else []
    gone = missing_files(p.key, record) if missing_files and same and (settings_same or renders) else []
    if gone:
        more = f" and {len(gone) - 3} more" if len(gone) > 3 else ""
        p.reason = f"result incomplete: {', '.join(gone[:3])}{more} missing or changed since it was written"
        return False
    if same and settings_same:
        _mark_done(p, record, DONE_REASON, p.pages)
        p.fingerprint = fp
        return True
    if renders:
        p.action, p.record, p.render_formats, p.fingerprint = "render", record, renders, fp
        p.pages = record.get("pages", p.pages)
        p.reason = f"render only: {', '.join(renders)} from middle JSON"
        return True
    p.reason = "input changed" if not same else "output-affecting settings changed"
    return False


def _decide_staged(p: PlannedDocument, s, out: Output) -> None:
    """Commit a finished staging folder of an earlier run when its record matches the input
    and settings (and no ``--force``), else convert."""
    staged = None if s.force else read_staged_record(os.path.join(out.staging_root, p.id))
    if staged is not None:
        same, _fp = _same_input(staged, p.source)
        if same and staged.get("settings") == p.settings_key:
            p.action = "commit"
            p.record = staged
            p.reason = "converted earlier; committing the staged result"
            return
    p.action = "convert"


def dry_run(planned, out: Output, rep, report_path: str | None) -> None:
    """``--dry-run``: one line per document of what the run would do (convert, commit, render,
    skip or fail, with pages, tier, windows and where the result would go), a summary line, and the
    report (``rep``, a ``report.Reporter``; written to ``report_path`` when given). ``planned``:
    any iterable of ``PlannedDocument`` s, taken one at a time (a run's stream)."""
    from .report import DocumentReport

    n = dict.fromkeys(("convert", "commit", "render", "skip", "fail"), 0)
    for p in planned:
        n[p.action] = n.get(p.action, 0) + 1
        if p.action == "render":
            rep._print(f"would render  {p.source.rel}  ({p.reason}; nothing converted) -> {out.display(p.key)}")
        elif p.action in ("convert", "commit"):
            what = "convert" if p.action == "convert" else "commit"
            win = f", {len(p.windows)} page windows" if p.windows else ""
            pages = f"{p.pages} pages, " if p.pages is not None else ""
            if p.page_range and p.pages is not None:  # --pages: what will be converted, of how many
                pages = f"pages {p.page_range} of {p.pages}, "
            why = f"; {p.reason}" if p.reason else ""  # converted before: why again
            rep._print(f"would {what}  {p.source.rel}  ({pages}tier {p.tier}{win}{why}) -> {out.display(p.key)}")
        else:
            rep._print(f"would {'fail' if p.action == 'fail' else 'skip'}  {p.source.rel}: {p.reason}")
        r = rep.add(DocumentReport(input=p.source.rel, status="skipped" if p.action == "skip" else
                                   ("failed" if p.action == "fail" else "pending"),
                                   code=p.code, reason=p.reason, tier=p.tier, pages=p.selected_pages,
                                   output=out.display(p.key) if p.action in ("convert", "commit", "render") else None,
                                   rendered=list(p.render_formats) or None, type=p.source.kind))
        rep.finished(r, advance=False, show=False)
    renders = f"{n['render']} to render from middle JSON, " if n["render"] else ""
    rep._print(f"dry run: {n['convert']} to convert, {n['commit']} to commit, {renders}{n['skip']} to skip, "
               f"{n['fail']} would fail; nothing was converted")
    rep.extra["dry_run"] = True
    if report_path:
        rep.write_json(report_path)
