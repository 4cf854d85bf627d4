"""One settings model for every command.

Sources, highest priority first (pydantic-settings):

1. command-line flags (only the ones the user actually gave),
2. environment variables ``MINERU_CLI_<OPTION>`` (for example ``MINERU_CLI_WORKERS=4``,
   ``MINERU_CLI_INCLUDE='["*.pdf"]'`` for lists),
3. a TOML file: ``--config FILE``, else ``mineru-cli.toml`` in the current folder, else the
   ``[tool.mineru-cli]`` table of ``pyproject.toml`` in the current folder,
4. the defaults below.

Must not: validate the environment (models, backends, storage: ``backend``/``store`` do), or be
imported by ``mineru-cli --help`` (pydantic is heavy).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    PyprojectTomlConfigSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import UsageError

Tier = Literal["auto", "flash", "basic", "standard", "advanced"]
Backend = Literal["auto", "vllm", "lmdeploy", "cpu", "remote"]
OutputFormat = Literal["md", "content_list", "middle", "images", "html", "latex", "docx", "content_list_v2"]
ALL_FORMATS: tuple[str, ...] = ("md", "content_list", "middle", "images")
# formats rendered from the middle JSON by mineru.render (render_html, render_latex, render_docx,
# render_content_list_v2; mineru/render/__init__.py, MinerU 4.0.12): not in ``all`` (opt-in);
# a finished result with its middle JSON gets them without converting again (plan.render_only_formats)
RENDER_FORMATS: tuple[str, ...] = ("html", "latex", "docx", "content_list_v2")

_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
               "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_size(value: Any) -> int | None:
    """Parse a byte size: ``200MB`` (10^6), ``4GiB`` (2^30), ``1500`` (bytes) -> int bytes.

    ``None``, ``0`` and ``""`` mean "no limit" and give ``None``.
    Raises ValueError on anything else.
    """
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, (int, float)):
        return int(value)
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {value!r} (examples: 200MB, 4GiB, 1500)")
    n = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    return n or None


class Settings(BaseSettings):
    """Every option of ``convert`` (and of ``doctor``, which shares the backend options).

    Units: sizes in bytes (strings like ``200MB`` accepted), times in seconds.
    """

    model_config = SettingsConfigDict(env_prefix="MINERU_CLI_", extra="forbid", validate_default=True)

    # inputs / outputs
    inputs: list[str] = Field(default_factory=list, description="input files, folders or s3:// prefixes")
    output: str | None = Field(default=None, description="output folder or fsspec URL")
    include: list[str] = Field(default_factory=list, description="glob patterns to include (default: all types MinerU converts)")
    exclude: list[str] = Field(default_factory=list, description="glob patterns to exclude")
    hidden: bool = False
    follow_symlinks: bool = False
    format: Annotated[list[OutputFormat], NoDecode] = Field(default_factory=lambda: list(ALL_FORMATS))

    # conversion
    tier: Tier = "auto"
    pages: str | None = Field(default=None, description="PDF page range, e.g. 1-5,10 (MinerU page_range)")
    window_pages: int = Field(default=100, ge=0, description="split PDFs longer than this into page windows (0: never); "
                             "when not set, also a PDF longer than its share of the run's pages (on 2+ workers)")
    on_empty: Literal["warn", "fail"] = "warn"
    retry_ocr: bool = False

    # pool
    workers: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, gt=0, description="seconds per document; default 300 + 5 per page")
    max_tasks_per_worker: int = Field(default=1000, ge=1)
    max_worker_memory: int | None = Field(default=None, description="bytes; default: available memory / workers")
    retries: int = Field(default=2, ge=0)
    order: Literal["size", "path"] = "size"
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None

    # run control
    force: bool = False
    dry_run: bool = False
    max_file_size: int | None = Field(default=200_000_000, description="bytes; larger inputs fail as too large")
    max_pages: int | None = Field(default=5000, description="PDFs with more pages fail as too many pages")
    report: str | None = None
    html_report: str | None = Field(default=None, description="write the self-contained HTML run report here")
    events: str | None = Field(default=None, description="JSON Lines file: one line per document as it ends")
    log_file: str | None = None
    verbose: int = 0
    quiet: bool = False
    progress_interval: float = Field(default=30.0, ge=0, description="seconds between --quiet progress lines (0: none)")
    staging_dir: str | None = None

    # backend
    backend: Backend = "auto"
    server_url: str | None = None
    gpus: list[int] | None = None
    fallback_cpu: bool = False
    max_concurrency: int = Field(default=8, ge=1)

    # storage: ``storage_options``/``endpoint_url`` apply to both sides; the ``input_``/``output_``
    # ones override them, key by key, for that side (see input_storage / output_storage)
    storage_options: dict[str, str] = Field(default_factory=dict)
    endpoint_url: str | None = None
    input_storage_options: dict[str, str] = Field(default_factory=dict)
    input_endpoint_url: str | None = None
    output_storage_options: dict[str, str] = Field(default_factory=dict)
    output_endpoint_url: str | None = None
    # keys per listing page of an s3:// input prefix (ListObjectsV2 MaxKeys; S3 sends at most 1000):
    # discovery holds one page at a time and hands its documents on as it comes
    list_page_size: int = Field(default=1000, ge=1, le=1000,
                                description="keys per listing page of an s3:// input prefix (1 to 1000)")

    def input_storage(self) -> tuple[dict[str, str], str | None]:
        """``(storage options, endpoint URL)`` for the inputs: ``storage_options`` with
        ``input_storage_options`` winning key by key, and ``input_endpoint_url`` else
        ``endpoint_url`` (None: the environment's, ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``)."""
        return {**self.storage_options, **self.input_storage_options}, self.input_endpoint_url or self.endpoint_url

    def output_storage(self) -> tuple[dict[str, str], str | None]:
        """``(storage options, endpoint URL)`` for OUTPUT, as :meth:`input_storage` with the
        ``output_`` settings."""
        return {**self.storage_options, **self.output_storage_options}, self.output_endpoint_url or self.endpoint_url

    @field_validator("max_file_size", "max_worker_memory", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int | None:
        return parse_size(v)

    @field_validator("max_pages", mode="before")
    @classmethod
    def _zero_is_unlimited(cls, v: Any) -> Any:
        return None if v in (0, "0", "") else v

    @field_validator("format", mode="before")
    @classmethod
    def _split_formats(cls, v: Any) -> Any:
        if isinstance(v, str):
            # from the environment: "md,images" or JSON '["md", "images"]'
            v = json.loads(v) if v.strip().startswith("[") else [v]
        if isinstance(v, (list, tuple)):
            out: list[str] = []
            for item in v:
                out.extend(p.strip() for p in str(item).split(",") if p.strip())
            if "all" in out:  # all = the four default formats, plus any rendered format also named
                return list(ALL_FORMATS) + [f for f in dict.fromkeys(out) if f != "all" and f not in ALL_FORMATS]
            return list(dict.fromkeys(out))
        return v

    @field_validator("format")
    @classmethod
    def _some_format(cls, v: list) -> list:
        if not v:
            raise ValueError("choose at least one of md, content_list, middle, images, html, latex, docx, "
                             "content_list_v2 (or all)")
        return v

    @field_validator("pages")
    @classmethod
    def _page_spec(cls, v: str | None) -> str | None:
        """MinerU's page_range syntax: ``1-5,10``, ``r3-r1`` counts from the end."""
        if v is None or not v.strip():
            return None
        tok = r"r?[1-9][0-9]*"
        for part in v.split(","):
            part = part.strip()
            if not re.fullmatch(rf"{tok}(-{tok})?", part):
                raise ValueError(f"bad page range {part!r} (examples: 1-5,10 or r3-r1)")
            a, _, b = part.partition("-")
            if b and not a.startswith("r") and not b.startswith("r") and int(b) < int(a):
                raise ValueError(f"bad page range {part!r}: the end comes before the start")
        return v.replace(" ", "")

    @field_validator("ray_address")
    @classmethod
    def _ray_address(cls, v: str | None) -> str | None:
        """``auto``, ``HOST:PORT`` (port 1-65535) or ``ray://HOST:PORT``."""
        if v is None or not v.strip():
            return None
        v = v.strip()
        if v != "auto":
            from .ray_cluster import split_address

            split_address(v[len("ray://"):] if v.startswith("ray://") else v)  # ValueError names the reason
        return v

    @field_validator("gpus", mode="before")
    @classmethod
    def _split_gpus(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [int(p) for p in v.split(",") if p.strip()]
        return v

    # the file source is chosen at load time (see load_settings)
    _toml_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _CONFIG_FILE.get("path")
        if path is not None:
            if path.name == "pyproject.toml":
                sources.append(PyprojectTomlConfigSettingsSource(settings_cls, path, ))
            else:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


_CONFIG_FILE: dict[str, Path | None] = {"path": None}


def find_config_file(explicit: str | None, cwd: Path | None = None) -> Path | None:
    """Return the TOML file to read: ``explicit``, else ``./mineru-cli.toml``, else
    ``./pyproject.toml`` when it has a ``[tool.mineru-cli]`` table, else None.

    Raises UsageError when ``explicit`` does not exist.
    """
    cwd = cwd or Path.cwd()
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise UsageError(f"config file {explicit}: not found")
        return p
    p = cwd / "mineru-cli.toml"
    if p.is_file():
        return p
    p = cwd / "pyproject.toml"
    if p.is_file():
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except Exception:
            return None
        if "mineru-cli" in data.get("tool", {}):
            return p
    return None


def load_settings(flags: dict[str, Any], config_file: str | None = None) -> Settings:
    """Build Settings from the flags the user gave (``None`` values are dropped), the
    environment and the TOML file.

    Raises UsageError with a one-line message naming the offending option and source.
    """
    path = find_config_file(config_file)
    _CONFIG_FILE["path"] = path
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        if path is not None and path.name == "pyproject.toml":
            _patch_pyproject_header()
        settings = Settings(**given)
        from .redact import register_settings_secrets

        register_settings_secrets(settings)
        return settings
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        field = str(first.get("loc", ("",))[0])
        env_name = f"MINERU_CLI_{field.upper()}"
        if field and field not in given and env_name in os.environ:
            where = f" (environment variable {env_name})"
        else:
            where = f" (config file {path})" if path else ""
        raise UsageError(f"invalid setting {loc or '?'}: {first.get('msg')}{where}") from None
    except (OSError, ValueError) as exc:
        text = str(exc)
        m = re.search(r'field "(\w+)" from source "EnvSettingsSource"', text)
        if m:
            raise UsageError(f"environment variable MINERU_CLI_{m.group(1).upper()}: cannot parse its value "
                             "(lists and tables are JSON there, e.g. '[\"md\", \"images\"]')") from None
        where = f" {path}" if path else ""
        raise UsageError(f"cannot read settings{where}: {text}") from None
    finally:
        _CONFIG_FILE["path"] = None


def _patch_pyproject_header() -> None:
    """Point pydantic-settings' pyproject source at ``[tool.mineru-cli]``."""
    Settings.model_config["pyproject_toml_table_header"] = ("tool", "mineru-cli")


def default_workers(total_memory: int | None = None, cpus: int | None = None) -> int:
    """Worker count for the CPU backend: one per core, capped so each worker has about
    1.5 GB (a 100-page text PDF took about 520 MB in MinerU 4 at tier flash, see
    ``shared/notes/mineru-4.md``; render children add about 85 MB each). Always >= 1.
    """
    import psutil

    cpus = cpus or os.cpu_count() or 1
    total_memory = total_memory or psutil.virtual_memory().available
    return max(1, min(cpus, int(total_memory // 1_500_000_000)))
