"""The only module that imports mineru. Runs inside worker processes.

A worker imports MinerU once (``init_worker``) and converts many tasks (``run_task``). A task
is a plain dict (picklable, also usable as a Ray task argument):

``{"kind": "convert", "task_id", "input": local path, "stem", "staging": folder,
"tier", "ocr_mode", "page_range", "formats": [...], "run_dir"}`` -> result dict
``{"ok": True, "pages", "seconds", "quality": {...}}`` or
``{"ok": False, "code", "reason", "transient", "traceback"}``.

A convert task with ``"window": [first, last]`` (1-based pages) is one page window: it
writes its share of the document for the merge (``_save_window``).
``{"kind": "merge", "staging", "windows": [folder, ...], "stem", "formats"}`` merges page
windows into one document result by concatenation (``_merge``).
``{"kind": "render", "staging", "stem", "result": folder or URL of a finished result,
"middle": its middle JSON's name, "storage_options", "formats": [...]}`` renders more formats
from a finished result's middle JSON, converting nothing (``_render_only``).

Formats rendered from the middle JSON (``write_renders``): ``html``, ``latex``, ``docx``,
``content_list_v2`` through ``mineru.render`` (``render_html``, ``render_latex``,
``render_docx``, ``render_content_list_v2``; mineru/render/__init__.py, MinerU 4.0.12). DOCX
embeds the images, which it asks of an asset resolver by their ``images/...`` path
(docvortex/render/_internal/docx/assets.py); a missing one is a ``DocxRenderError``.

Facts used (MinerU 4.0.12): ``MinerUParser(tier=, parse_mode=).parse(path, page_range=)``;
``ParseResult.save(writer)`` writes ``markdown.md``, ``middle_json.json``,
``structured_content.json``, ``model_output.json`` and ``images/*``; with ``page_range`` the
pages keep their page index in the whole document and image names carry it
(``images/page_<idx>_...``), so windows merge without renaming; ``render_content_list`` and
``render_markdown`` re-render from a materialized middle_json.

Must not: decide what to convert (``plan``), talk to the parent except through the task's
result dict, or be imported by anything ``--help`` imports; it is the only module that imports mineru.
"""

from __future__ import annotations

import json
import os
import signal
import time
import traceback
from typing import Any

from .failures import classify_exception
from .store import RENDER_SUFFIXES
from .worker import (_count_for_tests, _exit_with_parent, _hold_for_tests, _mark_running,
                     skip_magika_where_extension_decides, tune_gc)

_PARSERS: dict[tuple[str, str], Any] = {}


def init_worker(env: dict[str, str] | None = None, quiet_mineru: bool = True, log_dir: str | None = None) -> None:
    """Worker initializer: apply the backend's environment (``CUDA_VISIBLE_DEVICES``,
    ``MINERU_*``), make MinerU use local weights only, ignore SIGINT (the parent decides when
    workers stop: Ctrl-C reaches the whole process group), send the worker's (and its render
    processes') stdout/stderr to ``log_dir/worker-<pid>.log`` so MinerU's warnings do not
    interleave with the run's output, watch the parent (``_exit_with_parent``) and import MinerU
    once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    if log_dir:
        import sys

        os.makedirs(log_dir, exist_ok=True)
        fd = os.open(os.path.join(log_dir, f"worker-{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    for k, v in (env or {}).items():
        os.environ[k] = v
    os.environ.setdefault("MINERU_MODEL_SOURCE", "local")
    if quiet_mineru:
        os.environ.setdefault("MINERU_LOG_LEVEL", "WARNING")
    import mineru.parser  # noqa: F401  (the expensive import, once per worker)
    import mineru.render  # noqa: F401

    skip_magika_where_extension_decides()

    if quiet_mineru:
        from mineru.utils.logger import configure_global_log_level

        configure_global_log_level("warning")
    tune_gc()


def _parser(tier: str, ocr_mode: str):
    key = (tier, ocr_mode)
    if key not in _PARSERS:
        from mineru.parser import MinerUParser

        _PARSERS[key] = MinerUParser(tier=tier, parse_mode=ocr_mode)  # type: ignore[arg-type]
    return _PARSERS[key]


class _StagingWriter:
    """MinerU DataWriter into a local staging folder, renaming MinerU's files to ours."""

    def __init__(self, folder: str, stem: str, formats: list[str]) -> None:
        self.folder, self.stem, self.formats = folder, stem, set(formats)
        self.middle: dict | None = None
        self.markdown: str = ""
        self.assets: dict[str, bytes] = {}  # image bytes by path, kept for DOCX (it embeds them)

    def _put(self, rel: str, data: bytes) -> None:
        path = os.path.join(self.folder, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)

    def write(self, path: str, data: bytes) -> None:
        if path == "markdown.md":
            self.markdown = data.decode("utf-8", "replace")
            if "md" in self.formats:
                self._put(f"{self.stem}.md", data)
        elif path == "middle_json.json":
            self.middle = json.loads(data)
            if "middle" in self.formats:
                self._put(f"{self.stem}_middle.json", data)
        elif path.startswith("images/"):
            if "images" in self.formats:
                self._put(path, data)
            if "docx" in self.formats:
                self.assets[path] = data
        # structured_content.json and model_output.json are not part of our output

    def write_string(self, path: str, data: str) -> None:
        self.write(path, data.encode("utf-8"))


def run_task(task: dict) -> dict:
    """Run one task in this worker; never raises for document problems (they come back as
    ``{"ok": False, ...}``). A crash or kill of the process is seen by the pool instead.
    Every result has ``seconds``, ``started`` and ``ended`` (epoch seconds) and ``worker`` (pid)."""
    marker = _mark_running(task)
    started = time.time()
    try:
        try:
            _hold_for_tests(task)
            if task["kind"] == "merge":
                result = _merge(task)
            elif task["kind"] == "render":
                result = _render_only(task)
            else:
                _count_for_tests(task)
                result = _convert(task)
        except BaseException as exc:  # noqa: BLE001 - classified and returned
            code, reason, transient = classify_exception(exc)
            result = {"ok": False, "code": code, "reason": reason, "transient": transient,
                      "traceback": traceback.format_exc()}
        ended = time.time()
        result.update(seconds=round(ended - started, 3), started=round(started, 3), ended=round(ended, 3),
                      worker=os.getpid())
        return result
    finally:
        if marker:
            try:
                os.remove(marker)
            except OSError:
                pass


def _fetch(task: dict) -> str:
    """Local path of the task's input: the path itself, or (remote input) a copy downloaded
    through ``storage`` into the task's staging folder (``task["fetch"] = {"url", "storage_options"}``)."""
    fetch = task.get("fetch")
    if not fetch:
        return task["input"]
    from .storage import open_url

    local = os.path.join(task["staging"], "_input" + os.path.splitext(fetch["url"])[1][:16])
    if not os.path.exists(local):
        fs, path = open_url(fetch["url"], fetch.get("storage_options", {}))
        fs.get_file(path, local + ".part")
        os.replace(local + ".part", local)
    return local


def _convert(task: dict) -> dict:
    staging = task["staging"]
    os.makedirs(staging, exist_ok=True)
    parser = _parser(task["tier"], task["ocr_mode"])
    source = _fetch(task)
    try:
        result = parser.parse(source, page_range=task.get("page_range") or "")
    finally:
        if source != task["input"]:
            try:
                os.remove(source)
            except OSError:
                pass
    window = bool(task.get("window"))
    # a window keeps only its images under their final names; its md/content_list/middle go
    # to window_* files that the merge concatenates
    writer = _StagingWriter(staging, task["stem"], _window_formats(task["formats"]) if window else task["formats"])
    middle_obj = export_result(result, writer)
    middle = writer.middle or {}
    if window:
        return _save_window(staging, task["formats"], middle, writer.markdown)
    if "content_list" in task["formats"]:
        _write_content_list(staging, task["stem"], middle_obj)
    write_renders(staging, task["stem"], middle_obj, task["formats"], writer.assets.__getitem__)
    return {"ok": True, "pages": len(middle.get("pages", [])),
            "quality": quality_of(middle, writer.markdown)}


def export_result(result, writer) -> Any:
    """Write a ParseResult through ``writer`` the way ``ParseResult.save`` does in MinerU
    4.0.12 (mineru/parser/base.py: materialize the images, validate them, then markdown,
    middle JSON and image bytes), minus the two files we do not keep
    (``structured_content.json``, ``model_output.json``: about 45 % of save's time on the
    benchmark folder). Returns the materialized MiddleJson (for content_list rendering)."""
    from docvortex.export import materialize_middle, validate_materialized_assets
    from mineru.parser.base import ParseResult

    middle, assets = materialize_middle(result.middle_json)
    validate_materialized_assets(middle, assets)
    exported = ParseResult(middle_json=middle)
    writer.write_string("markdown.md", exported.markdown())
    writer.write_string("middle_json.json", exported.to_json())
    for path, payload in sorted(assets.items()):
        writer.write(path, payload)
    return middle


def _window_formats(formats: list[str]) -> list[str]:
    """What a page window writes under its final names: its images, when the document keeps
    them or renders a DOCX (which embeds them; the merge renders it)."""
    return ["images"] if "images" in formats or "docx" in formats else []


def write_renders(folder: str, stem: str, middle: Any, formats: list[str], asset_resolver=None) -> list[str]:
    """Render the formats of ``formats`` that ``mineru.render`` makes from a middle JSON
    (``store.RENDER_SUFFIXES``: html, latex, docx, content_list_v2) into ``folder`` as
    ``<stem>.html``, ``<stem>.tex``, ``<stem>.docx``, ``<stem>_content_list_v2.json``.

    ``middle``: a MiddleJson or its dict. ``asset_resolver(path) -> bytes`` gives an image's
    bytes by its ``images/...`` path (DOCX only). Returns the names written. Raises MinerU's
    errors (``DocxRenderError`` for a DOCX it cannot write, e.g. a missing image)."""
    wanted = [f for f in RENDER_SUFFIXES if f in formats]
    if not wanted:
        return []
    from mineru.render import render_content_list_v2, render_docx, render_html, render_latex
    from mineru.types import MiddleJson

    mj = middle if isinstance(middle, MiddleJson) else MiddleJson.from_dict(middle)
    written = []
    for fmt in wanted:
        if fmt == "html":
            data = render_html(mj, document_title=stem).encode("utf-8")
        elif fmt == "latex":
            data = render_latex(mj, document_title=stem).encode("utf-8")
        elif fmt == "docx":
            data = render_docx(mj, asset_resolver=asset_resolver)
        else:
            data = json.dumps(render_content_list_v2(mj), ensure_ascii=False, indent=2).encode("utf-8")
        name = stem + RENDER_SUFFIXES[fmt]
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(data)
        written.append(name)
    return written


def _render_only(task: dict) -> dict:
    """Render ``task["formats"]`` from the middle JSON of a finished result (``task["result"]``:
    its local folder, or its URL with ``storage_options``) into ``task["staging"]``, converting
    nothing: a rerun that adds html/latex/docx/content_list_v2. DOCX reads the result's images.
    Returns ``{"ok": True, "rendered": [names]}``, or ``{"ok": False, "code": "render_error",
    "reason"}`` (naming the file, suggesting ``--force``) when the middle JSON is not valid JSON
    or not an object; raises the storage's or MinerU's errors."""
    staging, base = task["staging"], task["result"].rstrip("/")
    os.makedirs(staging, exist_ok=True)
    if "://" in base:
        from .storage import open_url

        fs, root = open_url(base, task.get("storage_options", {}))

        def read(rel: str) -> bytes:
            return fs.cat_file(f"{root}/{rel}")
    else:
        def read(rel: str) -> bytes:
            with open(os.path.join(base, rel), "rb") as fh:
                return fh.read()
    try:
        middle = json.loads(read(task["middle"]))
        if not isinstance(middle, dict):
            raise ValueError(f"a JSON {type(middle).__name__}, not an object")
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError: a damaged file
        return {"ok": False, "code": "render_error", "transient": False,
                "reason": (f"render error: the middle JSON {task['middle']} of the result is damaged "
                           f"({' '.join(str(exc).split())[:200]}); convert it again with --force")}
    return {"ok": True, "rendered": write_renders(staging, task["stem"], middle, task["formats"], read)}


def _write_content_list(staging: str, stem: str, middle: Any) -> list:
    """Render MinerU's content_list (``mineru.render``) from a MiddleJson or its dict."""
    from mineru.render import render_content_list
    from mineru.types import MiddleJson

    cl = render_content_list(middle if isinstance(middle, MiddleJson) else MiddleJson.from_dict(middle))
    with open(os.path.join(staging, f"{stem}_content_list.json"), "w", encoding="utf-8") as fh:
        json.dump(cl, fh, ensure_ascii=False, indent=2)
    return cl


def _save_window(staging: str, formats: list[str], middle: dict, markdown: str) -> dict:
    """A page window's share of the document, rendered here (in parallel with the other
    windows) so that the merge only concatenates: ``window_middle.json`` (compact),
    ``window.md`` (MinerU's markdown of these pages), ``window_content_list.json`` and
    ``window_meta.json`` (page count and quality counts)."""
    quality = quality_of(middle, markdown)
    with open(os.path.join(staging, "window_middle.json"), "w", encoding="utf-8") as fh:
        json.dump(middle, fh, ensure_ascii=False)
    with open(os.path.join(staging, "window.md"), "w", encoding="utf-8") as fh:
        fh.write(markdown)
    if "content_list" in formats:
        _write_content_list(staging, "window", middle)
    n = len(middle.get("pages", []))
    with open(os.path.join(staging, "window_meta.json"), "w", encoding="utf-8") as fh:
        json.dump({"pages": n, "quality": quality}, fh)
    return {"ok": True, "pages": n, "quality": quality}


_PAGES_MARK = "\u0000mineru-cli-pages\u0000"


def _merge(task: dict) -> dict:
    """Merge page windows (staging folders written by ``_save_window``, in page order) into
    one document: markdown and content_list concatenated, middle_json pages (page indices
    already global: MinerU keeps them with ``page_range``) streamed window by window, images
    moved (their names carry the page index; a clash is an error, never an overwrite).

    Memory is bounded by one window, not by the document: nothing is re-rendered and no more
    than one window's pages are held at a time (a 20,000-page merge that re-rendered the whole
    document held about 800 MB and took 78 s). The markdown equals MinerU's rendering of the
    whole middle_json except where MinerU would join blocks across a window boundary, which
    it never marks (a window starts without its previous page)."""
    import shutil
    import textwrap

    from .quality import combine

    staging, stem, formats = task["staging"], task["stem"], task["formats"]
    windows = list(task["windows"])
    if not windows:
        raise ValueError("merge without windows")
    os.makedirs(staging, exist_ok=True)
    metas = []
    for wdir in windows:
        with open(os.path.join(wdir, "window_meta.json"), encoding="utf-8") as fh:
            metas.append(json.load(fh))

    if "images" in formats or "docx" in formats:
        for wdir in windows:
            img_dir = os.path.join(wdir, "images")
            if not os.path.isdir(img_dir):
                continue
            os.makedirs(os.path.join(staging, "images"), exist_ok=True)
            for name in sorted(os.listdir(img_dir)):
                dst = os.path.join(staging, "images", name)
                if os.path.exists(dst):
                    raise ValueError(f"merge: image name images/{name} occurs in two page windows")
                os.replace(os.path.join(img_dir, name), dst)

    if "md" in formats:
        with open(os.path.join(staging, f"{stem}.md"), "w", encoding="utf-8") as out:
            first = True
            for wdir in windows:
                with open(os.path.join(wdir, "window.md"), encoding="utf-8") as fh:
                    md = fh.read()
                if md.strip():
                    out.write(md if first else "\n\n" + md)
                    first = False

    if "content_list" in formats:
        with open(os.path.join(staging, f"{stem}_content_list.json"), "w", encoding="utf-8") as out:
            n = 0
            for wdir in windows:
                with open(os.path.join(wdir, "window_content_list.json"), encoding="utf-8") as fh:
                    for item in json.load(fh):
                        out.write(("[\n" if n == 0 else ",\n") + textwrap.indent(json.dumps(item, ensure_ascii=False, indent=2), "  "))
                        n += 1
            out.write("\n]" if n else "[]")

    renders = [f for f in RENDER_SUFFIXES if f in formats]
    keep_middle = "middle" in formats or bool(renders)  # the renders need the whole middle JSON: written, then read
    total_pages = 0
    last_idx = -1
    head: dict | None = None
    layout_pages: list = []
    pages_part = os.path.join(staging, ".pages.part")
    with open(pages_part, "w", encoding="utf-8") as part:
        for wdir in windows:
            with open(os.path.join(wdir, "window_middle.json"), encoding="utf-8") as fh:
                mj = json.load(fh)
            for page in mj.get("pages", []):
                idx = page.get("page_idx", 0)
                if idx <= last_idx:
                    raise ValueError(f"merge: page {idx} after page {last_idx}: windows out of page order")
                last_idx = idx
                if keep_middle:
                    part.write(("" if total_pages == 0 else ",\n") + textwrap.indent(json.dumps(page, ensure_ascii=False, indent=2), "    "))
                total_pages += 1
            layout_pages.extend(mj.get("extensions", {}).get("docvortex_layout", {}).get("pages", []))
            if head is None:
                head = mj
            del mj
    assert head is not None
    if keep_middle:
        middle_path = os.path.join(staging, f"{stem}_middle.json" if "middle" in formats else ".merged_middle.json")
        head["pages"] = _PAGES_MARK
        if "docvortex_layout" in head.get("extensions", {}):
            head["extensions"]["docvortex_layout"]["pages"] = layout_pages
        total = head.get("metadata", {}).get("document", {}).get("page_count")
        head["is_full_document"] = bool(total and total_pages == total)
        prefix, suffix = json.dumps(head, ensure_ascii=False, indent=2).split(json.dumps(_PAGES_MARK), 1)
        with open(middle_path, "w", encoding="utf-8") as out, open(pages_part, encoding="utf-8") as part:
            out.write(prefix + ("[\n" if total_pages else "["))
            shutil.copyfileobj(part, out, 1 << 20)
            out.write(("\n  ]" if total_pages else "]") + suffix)
    os.remove(pages_part)
    if renders:  # html/latex/docx of the whole document: it is held in memory while rendered
        with open(middle_path, encoding="utf-8") as fh:
            merged = json.load(fh)

        def image(rel: str) -> bytes:
            with open(os.path.join(staging, rel), "rb") as fh:
                return fh.read()

        write_renders(staging, stem, merged, formats, image)
        del merged
        if "middle" not in formats:
            os.remove(middle_path)
        if "images" not in formats:
            shutil.rmtree(os.path.join(staging, "images"), ignore_errors=True)

    for wdir in windows:
        shutil.rmtree(wdir, ignore_errors=True)
    return {"ok": True, "pages": total_pages, "quality": combine([m.get("quality") or {} for m in metas])}


def quality_of(middle: dict, markdown: str) -> dict:
    """Quality numbers of a converted document (see ``mineru_cli.quality``)."""
    from .quality import assess

    return assess(middle, markdown)
