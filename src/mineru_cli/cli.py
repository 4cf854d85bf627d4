"""Typer commands only: parse flags, build Settings, call the core, map errors to exit codes.

Nothing heavy is imported at module level: ``mineru-cli --help`` must stay fast and must
not import mineru.

Must not: hold any rule of a command (each command's module does), or import pydantic, fsspec,
psutil, rich, s3fs or ray at module level.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from . import __version__
from .errors import CliError, EXIT_USAGE

EXIT_CODES_HELP = """\
Exit codes: 0 all converted or skipped; 1 one or more documents failed;
2 usage or configuration error; 3 environment error (missing model weights, unusable
backend, output not writable); 4 another run is writing to the same OUTPUT;
130 interrupted (SIGINT); 143 terminated (SIGTERM).
"""

app = typer.Typer(
    name="mineru-cli",
    help="Batch-convert folders (local or S3) of documents to Markdown and JSON with MinerU 4.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mineru-cli {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Batch converter for documents (MinerU 4)."""


def _fail(exc: CliError) -> None:
    from .redact import redact_text

    typer.echo(redact_text(f"mineru-cli: error: {exc}"), err=True)
    raise typer.Exit(exc.exit_code)


@app.command(help="Convert documents to Markdown and JSON.\n\n" + EXIT_CODES_HELP)
def convert(
    inputs: List[str] = typer.Argument(..., help="Input files, folders or s3:// prefixes."),
    output: str = typer.Option(..., "-o", "--output", help="Output folder or fsspec URL (s3://bucket/prefix, memory://...)."),
    include: Optional[List[str]] = typer.Option(None, "--include", help="Glob pattern of files to include (repeatable)."),
    exclude: Optional[List[str]] = typer.Option(None, "--exclude", help="Glob pattern of files to exclude (repeatable)."),
    hidden: Optional[bool] = typer.Option(None, "--hidden", help="Also convert hidden files and folders."),
    follow_symlinks: Optional[bool] = typer.Option(None, "--follow-symlinks", help="Follow symbolic links (loops are detected)."),
    formats: Optional[List[str]] = typer.Option(None, "--format", help="Files to write: md, content_list, middle, images, all (those four), and html, latex, docx, content_list_v2 (rendered from the middle JSON; a finished result with its middle JSON gets them without converting again). Repeatable or comma-separated."),
    tier: Optional[str] = typer.Option(None, "--tier", help="auto|flash|basic|standard|advanced (auto: highest tier whose models are present, else flash)."),
    pages: Optional[str] = typer.Option(None, "--pages", help="PDF pages to convert, e.g. 1-5,10."),
    window_pages: Optional[int] = typer.Option(None, "--window-pages", help="Split PDFs longer than this many pages into page windows (0: never). Default 100, and when not given a PDF longer than its share of the run is split among the workers."),
    on_empty: Optional[str] = typer.Option(None, "--on-empty", help="warn|fail when a document yields no text."),
    retry_ocr: Optional[bool] = typer.Option(None, "--retry-ocr", help="Reconvert documents flagged no_text/garbled_text with OCR (needs tier basic or higher models)."),
    workers: Optional[int] = typer.Option(None, "-w", "--workers", help="Worker processes (default: what the machine can hold)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds per document (default 300 + 5 per page)."),
    max_tasks_per_worker: Optional[int] = typer.Option(None, "--max-tasks-per-worker", help="Recycle a worker after this many documents (default 1000)."),
    max_worker_memory: Optional[str] = typer.Option(None, "--max-worker-memory", help="Kill a worker whose resident memory passes this (e.g. 4GB; default: available memory / workers)."),
    retries: Optional[int] = typer.Option(None, "--retries", help="Retries for transient failures (crash, timeout, storage). Default 2."),
    order: Optional[str] = typer.Option(None, "--order", help="size (default: largest first, among each 1,000 documents ready to convert: a run streams, it never holds the whole list) or path (input order)."),
    executor: Optional[str] = typer.Option(None, "--executor", help="local (default) or ray."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address (auto, ray://host:port); also RAY_ADDRESS."),
    force: Optional[bool] = typer.Option(None, "--force", help="Reconvert documents that are already done."),
    dry_run: Optional[bool] = typer.Option(None, "--dry-run", help="List what would be converted or skipped, and where; start no MinerU."),
    max_file_size: Optional[str] = typer.Option(None, "--max-file-size", help="Inputs larger than this fail as too large (default 200MB; 0: no limit)."),
    max_pages: Optional[int] = typer.Option(None, "--max-pages", help="PDFs with more pages fail as too many pages (default 5000; 0: no limit)."),
    report: Optional[str] = typer.Option(None, "--report", help="Write the JSON report to this file."),
    html_report: Optional[str] = typer.Option(None, "--html-report", help="Write a self-contained HTML report (totals, failures, flags, every document, time chart) to this file."),
    events: Optional[str] = typer.Option(None, "--events", help="Write one JSON line per document as it ends to this file (flushed; follow it with tail -f)."),
    log_file: Optional[str] = typer.Option(None, "--log-file", help="Keep the full log, with tracebacks of failed documents, in this file."),
    verbose: int = typer.Option(0, "-v", "--verbose", count=True, help="More output (repeatable)."),
    quiet: Optional[bool] = typer.Option(None, "-q", "--quiet", help="Only errors and the summary."),
    staging_dir: Optional[str] = typer.Option(None, "--staging-dir", help="Local folder for staging results before they are committed."),
    backend: Optional[str] = typer.Option(None, "--backend", help="auto|vllm|lmdeploy|cpu|remote."),
    server_url: Optional[str] = typer.Option(None, "--server-url", help="OpenAI-compatible MinerU VLM server (remote backend)."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="GPU indices to use, e.g. 0,2."),
    fallback_cpu: Optional[bool] = typer.Option(None, "--fallback-cpu", help="Fall back to the CPU with a warning when the requested backend cannot work."),
    max_concurrency: Optional[int] = typer.Option(None, "--max-concurrency", help="Concurrent requests to a remote server (default 8)."),
    storage_option: Optional[List[str]] = typer.Option(None, "--storage-option", help="key=value passed to fsspec for inputs and OUTPUT (repeatable)."),
    endpoint_url: Optional[str] = typer.Option(None, "--endpoint-url", help="S3-compatible endpoint (MinIO, ...) for inputs and OUTPUT."),
    input_storage_option: Optional[List[str]] = typer.Option(None, "--input-storage-option", help="key=value for the inputs' storage only, over --storage-option (repeatable)."),
    input_endpoint_url: Optional[str] = typer.Option(None, "--input-endpoint-url", help="S3-compatible endpoint of the inputs, over --endpoint-url."),
    output_storage_option: Optional[List[str]] = typer.Option(None, "--output-storage-option", help="key=value for OUTPUT's storage only, over --storage-option (repeatable)."),
    output_endpoint_url: Optional[str] = typer.Option(None, "--output-endpoint-url", help="S3-compatible endpoint of OUTPUT, over --endpoint-url."),
    config: Optional[str] = typer.Option(None, "--config", help="TOML settings file (default ./mineru-cli.toml, else [tool.mineru-cli] in ./pyproject.toml)."),
) -> None:
    flags = dict(
        inputs=inputs, output=output, include=include or None, exclude=exclude or None, hidden=hidden,
        follow_symlinks=follow_symlinks, format=formats or None, tier=tier, pages=pages,
        window_pages=window_pages, on_empty=on_empty, retry_ocr=retry_ocr, workers=workers, timeout=timeout,
        max_tasks_per_worker=max_tasks_per_worker, max_worker_memory=max_worker_memory, retries=retries,
        order=order, executor=executor, ray_address=ray_address, force=force, dry_run=dry_run,
        max_file_size=max_file_size, max_pages=max_pages, report=report, html_report=html_report, events=events, log_file=log_file,
        verbose=verbose or None, quiet=quiet, staging_dir=staging_dir, backend=backend, server_url=server_url,
        gpus=gpus, fallback_cpu=fallback_cpu, max_concurrency=max_concurrency,
        storage_options=_kv(storage_option), endpoint_url=endpoint_url,
        input_storage_options=_kv(input_storage_option, "--input-storage-option"), input_endpoint_url=input_endpoint_url,
        output_storage_options=_kv(output_storage_option, "--output-storage-option"), output_endpoint_url=output_endpoint_url,
    )
    try:
        settings = _load_settings(flags, config)
        from .convert import run_convert

        # the imports' objects live as long as this process: keep them out of the cyclic garbage
        # collector's passes (the one at exit included), about 10 % of a rerun's time (gc.freeze).
        # A document's objects live while it crosses the pipeline (a few thousand documents in
        # flight): with CPython's default first threshold (700 allocations) they were all
        # examined again and again and promoted before they died; at 100,000 most die first
        # (a rerun over 100,000 finished documents: 4.21 s -> 3.56 s, median of 4, RESULTS.md).
        # Only garbage in reference cycles waits longer, and there is little.
        import gc

        gc.freeze()
        gc.set_threshold(100_000, 50, 100)
        code = run_convert(settings)
    except CliError as exc:
        _fail(exc)
        return
    raise typer.Exit(code)


@app.command(help="Explain the machine: GPU, driver, engines, models, storage, and the backend convert would choose.\n\n"
             "Exit code 0 when convert would run with these settings, 3 when it would not.")
def doctor(
    output: Optional[str] = typer.Argument(None, help="Output folder or URL whose storage to check."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON for machines."),
    tier: Optional[str] = typer.Option(None, "--tier", help="auto|flash|basic|standard|advanced."),
    backend: Optional[str] = typer.Option(None, "--backend", help="auto|vllm|lmdeploy|cpu|remote."),
    server_url: Optional[str] = typer.Option(None, "--server-url", help="OpenAI-compatible MinerU VLM server."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="GPU indices to use, e.g. 0,2."),
    fallback_cpu: Optional[bool] = typer.Option(None, "--fallback-cpu", help="Allow falling back to the CPU."),
    workers: Optional[int] = typer.Option(None, "-w", "--workers", help="Worker processes (shows the layout convert would use)."),
    max_concurrency: Optional[int] = typer.Option(None, "--max-concurrency", help="Concurrent requests to a remote server (default 8)."),
    executor: Optional[str] = typer.Option(None, "--executor", help="local (default) or ray: with ray, check the cluster too."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address (auto, host:port, ray://host:port); also RAY_ADDRESS."),
    storage_option: Optional[List[str]] = typer.Option(None, "--storage-option", help="key=value passed to fsspec (repeatable)."),
    endpoint_url: Optional[str] = typer.Option(None, "--endpoint-url", help="S3-compatible endpoint."),
    output_storage_option: Optional[List[str]] = typer.Option(None, "--output-storage-option", help="key=value for OUTPUT's storage only, over --storage-option (repeatable)."),
    output_endpoint_url: Optional[str] = typer.Option(None, "--output-endpoint-url", help="S3-compatible endpoint of OUTPUT, over --endpoint-url."),
    config: Optional[str] = typer.Option(None, "--config", help="TOML settings file."),
) -> None:
    flags = dict(output=output, tier=tier, backend=backend, server_url=server_url, gpus=gpus,
                 fallback_cpu=fallback_cpu, workers=workers, max_concurrency=max_concurrency,
                 executor=executor, ray_address=ray_address,
                 storage_options=_kv(storage_option), endpoint_url=endpoint_url,
                 output_storage_options=_kv(output_storage_option, "--output-storage-option"),
                 output_endpoint_url=output_endpoint_url)
    try:
        settings = _load_settings(flags, config)
        from .doctor import run_doctor

        code = run_doctor(settings, output=output, as_json=json_out)
    except CliError as exc:
        _fail(exc)
        return
    raise typer.Exit(code)


@app.command(help="Remove converted results older than an age, and stale partial results, from OUTPUT "
             "(local or S3). Only folders with this tool's done-record or pending marker (and its staging) "
             "are touched.\n\nExit codes: 0 done; 1 some results could not be removed; 2 usage error; "
             "3 OUTPUT not reachable or readable; 4 a convert run is writing to OUTPUT.")
def clean(
    output: str = typer.Argument(..., help="Output folder or URL (s3://bucket/prefix) that convert wrote to."),
    older_than: str = typer.Option(..., "--older-than", help="Age, e.g. 7d, 12h, 30m, 2w: results committed (or partial results started) longer ago are removed."),
    dry_run: Optional[bool] = typer.Option(None, "--dry-run", help="Print what would be removed; remove nothing."),
    quiet: Optional[bool] = typer.Option(None, "-q", "--quiet", help="Only the summary (and failures)."),
    staging_dir: Optional[str] = typer.Option(None, "--staging-dir", help="Staging folder given to convert, if any."),
    storage_option: Optional[List[str]] = typer.Option(None, "--storage-option", help="key=value passed to fsspec (repeatable)."),
    endpoint_url: Optional[str] = typer.Option(None, "--endpoint-url", help="S3-compatible endpoint (MinIO, ...)."),
    output_storage_option: Optional[List[str]] = typer.Option(None, "--output-storage-option", help="key=value for OUTPUT's storage only, over --storage-option (repeatable)."),
    output_endpoint_url: Optional[str] = typer.Option(None, "--output-endpoint-url", help="S3-compatible endpoint of OUTPUT, over --endpoint-url."),
    config: Optional[str] = typer.Option(None, "--config", help="TOML settings file."),
) -> None:
    flags = dict(output=output, dry_run=dry_run, quiet=quiet, staging_dir=staging_dir,
                 storage_options=_kv(storage_option), endpoint_url=endpoint_url,
                 output_storage_options=_kv(output_storage_option, "--output-storage-option"),
                 output_endpoint_url=output_endpoint_url)
    try:
        settings = _load_settings(flags, config)
        from .clean import run_clean

        code = run_clean(settings, older_than)
    except CliError as exc:
        _fail(exc)
        return
    raise typer.Exit(code)


@app.command(help="Summarize a run from its JSON report (convert --report): totals, failures by code, quality "
             "flags, the slowest ten; several reports: the runs side by side and the documents whose status "
             "changed. -o FILE.html also writes the self-contained HTML report.\n\nExit codes: 0 the (last) run "
             "had no failures (or was a dry run); 1 the run had failures or did not finish (interrupted); 2 usage "
             "error (a report file missing, unreadable or not a report; -o naming one of the reports).")
def report(
    reports: List[str] = typer.Argument(..., help="JSON report(s) written by convert --report; the last is the run summarized."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Write the HTML report to this file."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    try:
        from .html_report import report_command

        code = report_command(list(reports), html_out=output, as_json=json_out)
    except CliError as exc:
        _fail(exc)
        return
    except Exception as exc:  # noqa: BLE001 - a report we did not foresee: one line, not a traceback
        from .errors import UsageError

        _fail(UsageError(f"report {reports[-1] if len(reports) == 1 else ' '.join(reports)}: cannot summarize it: "
                         f"{type(exc).__name__}: {exc}"))
        return
    raise typer.Exit(code)


def _load_settings(flags: dict, config: Optional[str]):
    """``settings.load_settings`` with pydantic's plugin lookup switched off while our models
    are built and validated: the lookup reads the entry points of every installed
    distribution (about 80 ms with MinerU's dependencies). Restored afterwards, so the workers
    (MinerU's own models) see the user's setting. ``PYDANTIC_DISABLE_PLUGINS`` is pydantic's."""
    import os

    before = os.environ.get("PYDANTIC_DISABLE_PLUGINS")
    os.environ["PYDANTIC_DISABLE_PLUGINS"] = "1"
    try:
        from .settings import load_settings

        return load_settings(flags, config)
    finally:
        if before is None:
            os.environ.pop("PYDANTIC_DISABLE_PLUGINS", None)
        else:
            os.environ["PYDANTIC_DISABLE_PLUGINS"] = before


def _kv(pairs: Optional[List[str]], flag: str = "--storage-option") -> Optional[dict]:
    """``["key=value", ...]`` -> dict; raises UsageError naming ``flag`` on an item without '='."""
    if not pairs:
        return None
    from .errors import UsageError

    out = {}
    for item in pairs:
        if "=" not in item:
            raise UsageError(f"{flag} {item!r}: expected key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out


def main() -> None:
    """Console-script entry point. Standard output and error escape what their encoding cannot
    write (``\\udce9`` for a file name that is not valid UTF-8, which Python holds as a lone
    surrogate, PEP 383) rather than stop the run with a UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):  # replaced by a non-text stream (tests, pipes in wrappers)
            pass
    try:
        app()
    except CliError as exc:  # raised outside a command body
        typer.echo(f"mineru-cli: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
