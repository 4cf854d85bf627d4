"""Run reports for people: the HTML report (``--html-report``, ``mineru-cli report -o``) and the
terminal summary of ``mineru-cli report``.

Everything is drawn from JSON reports (``report.py``'s ``{"summary", "documents"}``), so a
report written by ``--report`` can be drawn later, or several compared. The HTML file is
self-contained: inline CSS, a little inline JavaScript (sort, filter), the time chart as
inline SVG; no network, no external resource. It is rendered with Jinja2 (autoescaping on)
from ``templates/report.html.j2``, shipped as package data. Secrets never appear: every string
the template is given (the reports' data, the labels) goes through ``redact.redact_data`` (the
same redaction as the logs and the JSON report) before rendering; the finished page is not
redacted again (a secret that is a common word, ``status``, would break its JavaScript).

Nothing heavy at import time: jinja2 and rich are imported where they are used.

Must not: read anything but JSON reports (no OUTPUT, no done-records), or change a report.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .errors import UsageError
from .redact import redact_data, redact_text

FAILURE_ORDER = ("corrupt", "encrypted", "worker_killed", "timeout", "memory_limit")
FLAGS = ("no_text", "garbled_text", "empty_pages")
SLOWEST = 10


def load_run(path: str) -> dict:
    """Read a JSON report written by ``convert --report``: ``{"summary": {...}, "documents": [...]}``.

    Raises UsageError (exit 2) with one line naming the file and the reason when it is missing,
    unreadable, not JSON, or not a report."""
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read())
    except FileNotFoundError:
        raise UsageError(f"report {path}: not found") from None
    except IsADirectoryError:
        raise UsageError(f"report {path}: is a folder, not a JSON report") from None
    except OSError as exc:
        raise UsageError(f"report {path}: cannot read it: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"report {path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("summary"), dict) \
            or not isinstance(data.get("documents"), list):
        raise UsageError(f"report {path}: not a mineru-cli report (expected an object with \"summary\" and \"documents\")")
    problem = _shape_problem(data)
    if problem:
        raise UsageError(f"report {path}: not a mineru-cli report: {problem}")
    return data


_SUMMARY_TYPES = {**{k: "number" for k in ("converted", "skipped", "failed", "total", "pages", "seconds", "flagged",
                                            "rendered", "started", "workers")},
                  "decision": dict, "output": dict, "interrupted": str, "dry_run": bool}
_DOC_TYPES = {"input": str, "status": str, "code": str, "reason": str, "tier": str, "output": str, "type": str,
              "pages": "number", "seconds": "number", "started": "number", "ended": "number", "worker": "number",
              "attempts": list, "quality": dict, "warnings": list, "rendered": list}


def _wrong_type(value: Any, want: Any) -> bool:
    """Whether ``value`` (not None) is not of ``want``: a type, or ``"number"`` (int or float, not bool)."""
    if value is None:
        return False
    if want == "number":
        return isinstance(value, bool) or not isinstance(value, (int, float))
    return not isinstance(value, want)


def _shape_problem(data: dict) -> str | None:
    """What in a report's summary and documents is not what ``convert --report`` writes (a
    value of the wrong type, a document that is not an object), as a short phrase; None when
    nothing is. Missing keys are fine (older reports)."""
    what = {"number": "a number", dict: "an object", list: "a list", str: "a string", bool: "true or false"}
    for key, want in _SUMMARY_TYPES.items():
        if _wrong_type(data["summary"].get(key), want):
            return f"summary.{key} is {json.dumps(data['summary'][key])[:40]}, not {what[want]}"
    for i, doc in enumerate(data["documents"]):
        if not isinstance(doc, dict):
            return f"documents[{i}] is {json.dumps(doc)[:40]}, not an object"
        for key, want in _DOC_TYPES.items():
            if _wrong_type(doc.get(key), want):
                return f"documents[{i}].{key} is {json.dumps(doc[key])[:40]}, not {what[want]}"
        if any(not isinstance(a, dict) for a in doc.get("attempts") or []):
            return f"documents[{i}].attempts holds something that is not an object"
        if any(not isinstance(w, str) for w in doc.get("warnings") or []):
            return f"documents[{i}].warnings holds something that is not a string"
    return None


def _flag_messages(doc: dict) -> dict[str, str]:
    """Quality flags of a document -> its one-line message (from its warnings when there)."""
    q = doc.get("quality") or {}
    warnings = doc.get("warnings") or []
    out = {}
    for flag in FLAGS:
        if flag == "empty_pages":
            if q.get("empty_pages"):
                out[flag] = next((w for w in warnings if w.endswith("empty pages")), f"{q['empty_pages']} empty pages")
        elif q.get(flag):
            out[flag] = next((w for w in warnings if w.startswith(flag)), flag)
    return out


HIDDEN_NAME = "name hidden: holds a secret"


def _output_link(doc: dict, summary: dict, base_dir: str | None) -> str | None:
    """A relative link (URL-encoded: ``#``, ``%``, spaces) from ``base_dir`` (the HTML file's
    folder) to a document's local result folder; None for remote OUTPUT, when there is no
    result, for a document not converted (pending in a dry run), and when the path was redacted
    (it held a secret: ``***``, a link that would not resolve)."""
    from urllib.parse import quote

    out = doc.get("output")
    if not out or base_dir is None or doc.get("status") == "pending" or "***" in out:
        return None
    where = summary.get("output") or {}
    root, url = where.get("local_root"), (where.get("url") or "").rstrip("/")
    if root and url and out.startswith(url + "/"):
        path = os.path.join(root, out[len(url) + 1:])
    elif "://" in out:
        return None
    else:
        path = os.path.abspath(out)
    rel = os.path.relpath(path, base_dir).replace(os.sep, "/")
    return quote(rel.rstrip("/") + "/", safe="/")


def _doc_type(doc: dict) -> str:
    t = doc.get("type")
    if t:
        return str(t)
    name = str(doc.get("input", ""))
    return name.rsplit(".", 1)[-1].lower() if "." in name.rsplit("/", 1)[-1] else ""


def summarize(run: dict) -> dict:
    """The summary people look at, from one JSON report: ``totals`` (converted, skipped,
    failed, pending (a dry run's documents to convert), flagged, rendered, total, pages,
    converted_pages (pages of the documents converted, not only rendered, in this run), seconds,
    pages_per_second (converted_pages / seconds; None without any)), ``interrupted`` (``"SIGINT"``,
    ``"SIGTERM"`` or None), ``dry_run`` (bool), ``decision`` (backend,
    tier, reasons), ``failures`` and ``flags`` (``[{"code", "count", "documents": [{"input",
    "reason"}]}]``, largest first; known failure codes first on ties), ``slowest`` (the ten
    slowest documents a worker handled: ``{"input", "status", "seconds", "pages"}``)."""
    s = run.get("summary") or {}
    docs = [d for d in run.get("documents") or [] if isinstance(d, dict)]
    n = {k: sum(1 for d in docs if d.get("status") == k) for k in ("converted", "skipped", "failed", "pending")}
    flagged = [d for d in docs if _flag_messages(d).keys() & {"no_text", "garbled_text"}]
    seconds = float(s.get("seconds") or 0.0)
    pages = int(s.get("pages") or sum(d.get("pages") or 0 for d in docs if d.get("status") == "converted"))
    # pages MinerU converted in this run: a render-only document's pages were converted earlier
    converted_pages = sum(d.get("pages") or 0 for d in docs if d.get("status") == "converted" and not d.get("rendered"))
    totals = {**n, "flagged": s.get("flagged", len(flagged)), "rendered": s.get("rendered", 0), "total": len(docs),
              "pages": pages, "converted_pages": converted_pages, "seconds": round(seconds, 3),
              "pages_per_second": round(converted_pages / seconds, 2) if seconds > 0 and converted_pages else None}
    groups: dict[str, list[dict]] = {}
    for d in docs:
        if d.get("status") == "failed":
            groups.setdefault(d.get("code") or "unknown", []).append({"input": d.get("input"), "reason": d.get("reason", "")})
    order = {c: i for i, c in enumerate(FAILURE_ORDER)}
    failures = [{"code": c, "count": len(v), "documents": v}
                for c, v in sorted(groups.items(), key=lambda kv: (-len(kv[1]), order.get(kv[0], 99), kv[0]))]
    flag_groups: dict[str, list[dict]] = {f: [] for f in FLAGS}
    for d in docs:
        for flag, msg in _flag_messages(d).items():
            flag_groups[flag].append({"input": d.get("input"), "reason": msg})
    flags = [{"code": f, "count": len(v), "documents": v} for f, v in flag_groups.items() if v]
    worked = [d for d in docs if d.get("attempts")]
    slowest = [{"input": d.get("input"), "status": d.get("status"), "seconds": d.get("seconds") or 0.0,
                "pages": d.get("pages")}
               for d in sorted(worked, key=lambda d: -(d.get("seconds") or 0.0))[:SLOWEST]]
    decision = s.get("decision") or {k: s.get(k) for k in ("backend", "tier") if s.get(k)}
    return {"totals": totals, "decision": decision, "failures": failures, "flags": flags, "slowest": slowest,
            "workers": s.get("workers"), "started": s.get("started"), "interrupted": s.get("interrupted"),
            "dry_run": bool(s.get("dry_run"))}


def _timeline(docs: list[dict], width: int = 1000, lane_height: int = 22) -> dict | None:
    """Per-worker lanes of the documents' attempts, for the SVG time chart: ``{"width",
    "height", "seconds", "lanes": [{"label", "y"}], "bars": [{"x", "y", "w", "status",
    "title"}], "ticks": [{"x", "label"}]}`` (x in SVG units over the run's span); None when
    the report has no attempt times (older reports)."""
    spans = []
    for d in docs:
        for a in d.get("attempts") or []:
            if isinstance(a.get("started"), (int, float)) and isinstance(a.get("ended"), (int, float)):
                spans.append((d, a))
    if not spans:
        return None
    t0 = min(a["started"] for _d, a in spans)
    t1 = max(a["ended"] for _d, a in spans)
    span = max(t1 - t0, 1e-3)
    workers = sorted({a.get("worker") or 0 for _d, a in spans})
    lane_of = {w: i for i, w in enumerate(workers)}
    left, right = 90, 40  # room for the lane labels, and for the last tick's label
    scale = (width - left - right) / span
    bars = []
    for d, a in spans:
        y = 10 + lane_of[a.get("worker") or 0] * lane_height
        x = left + (a["started"] - t0) * scale
        status = "failed" if a.get("status") == "failed" else ("flagged" if _flag_messages(d) else "ok")
        what = f" pages {a['pages']}" if a.get("pages") else (f" ({a['task']})" if a.get("task") else "")
        title = (f"{d.get('input')}{what}: attempt {a.get('attempt')}, {a.get('status')}, "
                 f"{a['ended'] - a['started']:.2f} s" + (f", {a.get('reason')}" if a.get("reason") else ""))
        bars.append({"x": round(x, 1), "y": y, "w": round(max((a["ended"] - a["started"]) * scale, 2.0), 1),
                     "status": status, "title": title})
    ticks = [{"x": round(left + i * (width - left - right) / 4, 1), "label": f"{span * i / 4:.1f} s"} for i in range(5)]
    lanes = [{"label": f"worker {w}" if w else "worker ?", "y": 10 + i * lane_height} for i, w in enumerate(workers)]
    return {"width": width, "height": 30 + len(workers) * lane_height, "seconds": round(span, 2),
            "lanes": lanes, "bars": bars, "ticks": ticks, "lane_height": lane_height - 6}


def run_view(run: dict, base_dir: str | None, label: str = "") -> dict:
    """What the template draws for one run: :func:`summarize` plus ``rows`` (every document:
    input, status, code, reason, type, pages, seconds, attempts, link (URL-encoded, or None),
    hidden (its output path was redacted), flags, warnings, rendered),
    ``timeline`` (:func:`_timeline`) and ``label``."""
    from urllib.parse import unquote

    s = run.get("summary") or {}
    docs = [d for d in run.get("documents") or [] if isinstance(d, dict)]
    view = summarize(run)
    view["rows"] = [{"input": d.get("input"), "status": d.get("status"), "code": d.get("code") or "",
                     "reason": d.get("reason", ""), "type": _doc_type(d), "pages": d.get("pages"),
                     "seconds": d.get("seconds") or 0.0, "attempts": len(d.get("attempts") or []),
                     "link": (link := _output_link(d, s, base_dir)),
                     "link_text": unquote(link) if link else None, "hidden": "***" in str(d.get("output") or ""),
                     "flags": sorted(_flag_messages(d)),
                     "warnings": d.get("warnings") or [], "rendered": d.get("rendered") or []}
                    for d in docs]
    view["timeline"] = _timeline(docs)
    view["label"] = label
    view["output"] = (s.get("output") or {}).get("url")
    return view


def _status(doc: dict | None) -> str | None:
    """A document's status in a comparison: ``"failed (corrupt)"``, ``"skipped (done)"``, ...; None: absent."""
    if doc is None:
        return None
    return f"{doc.get('status')}" + (f" ({doc.get('code')})" if doc.get("code") else "")


def _change(statuses: list[str | None]) -> str | None:
    """How a document's statuses over the runs changed: None (unchanged: the same status in
    every run, ``converted`` then ``skipped (done)`` counting as the same, the normal rerun),
    ``"regression"`` (failed in the last run, not in an earlier one), ``"fixed"`` (failed
    earlier, not in the last run), ``"new"``, ``"gone"`` (absent from the last run) or ``"changed"``."""
    same = ["converted" if st == "skipped (done)" else st for st in statuses]
    if len(set(same)) == 1:
        return None
    last, earlier = statuses[-1], statuses[:-1]
    failed = [bool(st and st.startswith("failed")) for st in statuses]
    if failed[-1] and not all(failed[:-1]):
        return "regression"
    if any(failed[:-1]) and last is not None and not failed[-1]:
        return "fixed"
    if last is None:
        return "gone"
    if all(st is None for st in earlier):
        return "new"
    return "changed"


CHANGE_ORDER = ("regression", "fixed", "changed", "new", "gone")


def compare_runs(runs: list[dict], labels: list[str]) -> dict:
    """Several runs side by side: ``totals`` per run (:func:`summarize`) and ``changed``: the
    documents whose status (or failure code) is not the same in every run (a rerun's
    ``skipped (done)`` of a document converted before is no change), ``[{"input", "change":
    "regression|fixed|changed|new|gone" (:func:`_change`), "statuses": [str or None per run]}]``
    (None: not in that run), regressions first, then in ``CHANGE_ORDER``, then by first appearance."""
    per = [{d.get("input"): d for d in r.get("documents") or [] if isinstance(d, dict)} for r in runs]
    names = list(dict.fromkeys(n for p in per for n in p))
    changed = []
    for name in names:
        st = [_status(p.get(name)) for p in per]
        change = _change(st)
        if change:
            changed.append({"input": name, "change": change, "statuses": st})
    changed.sort(key=lambda c: CHANGE_ORDER.index(c["change"]))
    return {"labels": labels, "totals": [summarize(r)["totals"] for r in runs], "changed": changed}


def run_labels(paths: list[str]) -> list[str]:
    """Short distinct labels for report files: the base name (``run.json``); when two share it,
    the parent folder too (``mon/run.json``), and the whole path when even that collides."""
    labels = [os.path.basename(p) for p in paths]
    if len(set(labels)) == len(labels):
        return labels
    two = [os.path.join(os.path.basename(os.path.dirname(os.path.abspath(p))), os.path.basename(p)).replace(os.sep, "/")
           for p in paths]
    return two if len(set(two)) == len(two) else list(paths)


def render_report(runs: list[dict], *, base_dir: str | None = None, labels: list[str] | None = None) -> str:
    """The HTML report of ``runs`` (JSON reports; one run, or several to compare: the last is
    shown in full) as one self-contained HTML string, secrets redacted. ``base_dir``: the folder
    the HTML file will be in (output links are relative to it; None: no links)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    if not runs:
        raise ValueError("render_report needs at least one run")
    runs = [redact_data(r) for r in runs]
    labels = redact_data(labels or [f"run {i + 1}" if len(runs) > 1 else "" for i in range(len(runs))])
    env = Environment(loader=PackageLoader("mineru_cli", "templates"), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    template = env.get_template("report.html.j2")
    return template.render(view=run_view(runs[-1], base_dir, labels[-1]), hidden_name=HIDDEN_NAME,
                           compare=compare_runs(runs, labels) if len(runs) > 1 else None)


def write_html_report(runs: list[dict], path: str, *, base_dir: str | None = None,
                      labels: list[str] | None = None) -> None:
    """Write :func:`render_report` to the local file ``path`` (atomic replace). ``base_dir``
    defaults to ``path``'s folder. Raises OSError."""
    folder = os.path.dirname(os.path.abspath(path))
    html = render_report(runs, base_dir=base_dir or folder, labels=labels)
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8", errors="backslashreplace") as fh:
        fh.write(html)
    os.replace(tmp, path)


def same_file(a: str, b: str) -> bool:
    """Whether the paths ``a`` and ``b`` name the same file (one that exists, or the same path
    once symbolic links are followed: a link to a file not written yet counts)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_html_target(html_out: str, reports: list[str], option: str) -> None:
    """Refuse (UsageError, exit 2) an HTML output that is one of the JSON ``reports``: writing
    it would overwrite the report with HTML. ``option``: how the HTML output was given."""
    for p in reports:
        if p and same_file(html_out, p):
            raise UsageError(f"{option} {html_out}: is the JSON report {p}; writing the HTML there would "
                             "overwrite it (give another file)")


def exit_code(view: dict) -> int:
    """The ``report`` command's exit code for a :func:`summarize` view: 1 when the run had
    failures or did not finish (interrupted), else 0; a dry run is 0 (nothing was run: its
    "would fail" documents are listed, as ``convert --dry-run`` exits 0)."""
    if view["dry_run"]:
        return 0
    return 1 if view["totals"]["failed"] or view["interrupted"] else 0


def report_command(paths: list[str], *, html_out: str | None = None, as_json: bool = False) -> int:
    """``mineru-cli report RUN.json...``: print the summary of the last run (with several, the
    totals side by side and the documents whose status changed), as rich tables or ``--json``;
    ``html_out``: also write the HTML report there. Returns :func:`exit_code` of the last run
    (1: failures or interrupted; 0: none, or a dry run). Raises UsageError (exit 2) for a
    missing or invalid report file, or ``html_out`` being one of the reports."""
    if html_out:
        check_html_target(html_out, paths, "-o")
    runs = [load_run(p) for p in paths]
    labels = run_labels(paths)
    if html_out:
        try:
            write_html_report(runs, html_out, labels=labels)
        except OSError as exc:
            raise UsageError(f"-o {html_out}: cannot write it: {exc.strerror or exc}") from None
    runs = [redact_data(r) for r in runs]
    last = summarize(runs[-1])
    compare = compare_runs(runs, redact_data(labels)) if len(runs) > 1 else None
    if as_json:
        data: dict[str, Any] = {"report": redact_text(paths[-1]), **last}
        if compare:
            data["compare"] = compare
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        _print_tables(last, compare, redact_text(paths[-1]))
        if html_out:
            print(f"HTML report: {redact_text(html_out)}")
    return exit_code(last)


def _print_tables(view: dict, compare: dict | None, path: str) -> None:
    """The terminal summary (rich tables): totals, failures by code, quality flags, slowest ten."""
    from rich.console import Console
    from rich.markup import escape as e
    from rich.table import Table

    console = Console(highlight=False)
    t = view["totals"]
    if compare:
        table = Table(title="runs compared")
        table.add_column("")
        for label in compare["labels"]:
            table.add_column(e(label), justify="right")
        for key in ("converted", "skipped", "failed", "flagged", "total", "pages", "seconds"):
            table.add_row(key, *[str(tt[key]) for tt in compare["totals"]])
        console.print(table)
        if compare["changed"]:
            ch = Table(title="status changed")
            ch.add_column("document")
            ch.add_column("change")
            for label in compare["labels"]:
                ch.add_column(e(label))
            for c in compare["changed"]:
                ch.add_row(e(c["input"]), c["change"], *[e(s or "-") for s in c["statuses"]])
            console.print(ch)
    if view["interrupted"]:
        console.print(f"interrupted by {view['interrupted']}: the run did not finish; a rerun resumes", markup=False)
    if view["dry_run"]:
        console.print("dry run: nothing was converted; pending = to convert", markup=False)
    table = Table(title=f"run {e(path)}")
    keys = ["converted", "skipped", "failed", *(["pending"] if t["pending"] else []), "flagged", "total", "pages",
            "seconds"]
    for col in [*keys, "pages/s"]:
        table.add_column("to convert" if col == "pending" else col, justify="right")
    table.add_row(*[str(t[k]) for k in keys], str(t["pages_per_second"] if t["pages_per_second"] is not None else "-"))
    console.print(table)
    if t["rendered"]:
        console.print(f"rendered {t['rendered']}: new formats from the middle JSON, not converted (left out of pages/s)",
                      markup=False)
    d = view.get("decision") or {}
    if d:
        console.print(f"backend: {d.get('backend')}; tier: {d.get('tier')}"
                      + (f" ({d['tier_reason']})" if d.get("tier_reason") else ""), markup=False)
    for title, groups in (("failures by code", view["failures"]), ("quality flags", view["flags"])):
        if not groups:
            continue
        g = Table(title=title)
        for col in ("code", "count", "document", "reason"):
            g.add_column(col)
        for grp in groups:
            for i, doc in enumerate(grp["documents"]):
                g.add_row(e(grp["code"]) if i == 0 else "", str(grp["count"]) if i == 0 else "", e(str(doc["input"])),
                          e(str(doc["reason"])))
        console.print(g)
    if view["slowest"]:
        sl = Table(title=f"slowest {len(view['slowest'])}")
        for col in ("document", "status", "seconds", "pages"):
            sl.add_column(col)
        for doc in view["slowest"]:
            sl.add_row(e(str(doc["input"])), e(str(doc["status"])), f"{doc['seconds']:.2f}", str(doc["pages"] if doc["pages"] is not None else "-"))
        console.print(sl)
