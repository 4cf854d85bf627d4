"""Model weights per tier, asked of MinerU's own registry and verification code.

Facts (MinerU 4.0.12, ``mineru/model/registry.py`` and ``mineru/types.py``):
``flash`` needs no weights; ``basic`` needs the small-model repo (``MinerU-4_models_onnx`` on
the CPU, ``MinerU-4_models_torch`` with torch on a GPU); ``standard`` adds the MinerU2.5 VLM
(GGUF for llama.cpp, full weights for vllm/lmdeploy) unless a remote server is configured;
``advanced`` needs what ``standard`` needs (it adds image analysis, no new repo).
``mineru-kit models download --tier basic|standard`` downloads them.

Must not: download weights, or import mineru at module level (``mineru-kit`` downloads; the
registry is asked lazily).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import EnvironmentProblem

TIERS_HIGH_TO_LOW: tuple[str, ...] = ("advanced", "standard", "basic", "flash")


@dataclass
class RepoStatus:
    """One MinerU model repository: ``name``, ``ready``, local ``root`` and ``missing`` paths."""

    name: str
    ready: bool
    root: str
    missing: list[str] = field(default_factory=list)


@dataclass
class TierModels:
    """Whether ``tier`` can run here: ``ready`` when every repo in ``repos`` is ready."""

    tier: str
    ready: bool
    repos: list[RepoStatus] = field(default_factory=list)
    #: what the repos were resolved for (None: MinerU's own auto choice in this process)
    small_backend: str | None = None
    vlm_engine: str | None = None
    remote: bool = False

    @property
    def download_command(self) -> str:
        """The MinerU command that downloads what is missing ('' for flash).

        Names ``--small-backend``/``--vlm-engine`` when they were given, so that the command fetches
        the weight format the chosen backend loads (``mineru-kit models download --help``). With a
        remote VLM server only the small models are local: that is the ``basic`` download.
        """
        if self.tier == "flash":
            return ""
        deploy = "basic" if self.tier == "basic" or self.remote else "standard"
        cmd = f"mineru-kit models download --tier {deploy}"
        if self.small_backend:
            cmd += f" --small-backend {self.small_backend}"
        if self.vlm_engine and deploy == "standard":
            cmd += f" --vlm-engine {self.vlm_engine}"
        return cmd

    def missing_names(self) -> list[str]:
        return [r.name for r in self.repos if not r.ready]


def ensure_local_model_source() -> None:
    """Make MinerU look only at local weights (``MINERU_MODEL_SOURCE=local``) unless the user
    set a source: with the default ``auto`` MinerU probes the network for about 25 s and writes
    ``model.source`` into the user's config.yaml (measured, shared/notes/mineru-4.md)."""
    os.environ.setdefault("MINERU_MODEL_SOURCE", "local")


def tier_models(tier: str, *, vlm_engine: str | None = None, server_url: str | None = None,
                small_backend: str | None = None) -> TierModels:
    """Ask MinerU which repos ``tier`` needs here and whether they are on disk.

    ``vlm_engine`` (llama-cpp|vllm|lmdeploy|mlx) picks the VLM weight format; ``server_url`` set
    means the VLM runs remotely and needs no local VLM weights; ``small_backend`` (onnx|torch)
    picks the small-model repo (None: MinerU's auto choice in this process). Imports mineru
    (about 1 s).
    """
    if tier == "flash":
        return TierModels(tier="flash", ready=True)
    ensure_local_model_source()
    from mineru.config import config
    from mineru.model.download import verify_model_repo
    from mineru.model.registry import model_repos_for_tier

    deploy = "basic" if tier == "basic" else "standard"
    vlm_config = config.model.vlm
    if server_url is not None:
        vlm_config = vlm_config.model_copy(update={"server_url": server_url})
    repos = model_repos_for_tier(deploy, small_backend=small_backend,
                                 vlm_engine=vlm_engine if not server_url else None, vlm_config=vlm_config)
    statuses = []
    for repo in repos:
        res = verify_model_repo(repo)
        statuses.append(RepoStatus(name=repo.name, ready=bool(res.ready), root=str(res.root), missing=list(res.missing_paths)))
    return TierModels(tier=tier, ready=all(s.ready for s in statuses), repos=statuses, small_backend=small_backend,
                      vlm_engine=None if server_url else vlm_engine, remote=bool(server_url))


def absent_model_folder(environ=None) -> str | None:
    """MinerU's model folder when it plainly holds no weights, else None (then ask MinerU).

    Not None only when nothing can point MinerU elsewhere: no ``MINERU_CONFIG`` and no
    ``MINERU_MODEL_*`` variable (``MINERU_MODEL_BASE_DIR`` overrides the folder), no
    ``config.yaml`` under ``MINERU_HOME`` (default ``~/.mineru``), and no ``models`` folder
    there (MinerU 4.0.12 ``mineru/config.py``: ``model.base_dir`` defaults to
    ``$MINERU_HOME/models``; ``ModelRepo.local_dir()`` is ``base_dir/<repo>``). Asking MinerU's
    registry imports ``mineru.config`` and ``mineru.model.download`` (huggingface_hub): about
    0.8 s before the first worker can start, on every run of a machine without weights.
    """
    env = os.environ if environ is None else environ
    if any(k.startswith("MINERU_MODEL_") and k != "MINERU_MODEL_SOURCE" and v for k, v in env.items()) \
            or mineru_config_file(env) is not None:
        return None
    folder = os.path.join(mineru_home(env), "models")
    if os.path.exists(folder):
        return None
    return folder


def mineru_home(environ=None) -> str:
    """MinerU's home folder: ``$MINERU_HOME``, default ``~/.mineru`` (MinerU 4.0.12
    ``mineru/config.py``, ``MINERU_HOME_ENV``)."""
    env = os.environ if environ is None else environ
    return os.path.expanduser(env.get("MINERU_HOME") or os.path.join("~", ".mineru"))


def mineru_config_file(environ=None) -> str | None:
    """The configuration file MinerU would read, or None when there is none: ``$MINERU_CONFIG``
    when set (MinerU then fails if it is missing: returned anyway), else
    ``mineru_home()/config.yaml`` when it exists (MinerU 4.0.12 ``_resolve_config_file``)."""
    env = os.environ if environ is None else environ
    if env.get("MINERU_CONFIG"):
        return env["MINERU_CONFIG"]
    path = os.path.join(mineru_home(env), "config.yaml")
    return path if os.path.exists(path) else None


def resolve_tier(requested: str, *, vlm_engine: str | None = None, server_url: str | None = None,
                 probe=tier_models, real_probe: bool | None = None) -> tuple[str, str]:
    """Turn ``--tier`` into the tier to run and a one-line reason.

    ``auto`` -> the highest tier whose weights are present, else ``flash``. An explicit tier
    whose weights are missing raises EnvironmentProblem (exit 3) naming the missing repos and
    the download command. ``probe(tier, vlm_engine=..., server_url=...) -> TierModels`` is
    injectable for tests. For ``auto`` with the real probe, ``absent_model_folder`` answers
    first.
    """
    if requested == "flash":
        return "flash", "tier flash requested (no model weights needed)"
    if requested != "auto":
        tm = probe(requested, vlm_engine=vlm_engine, server_url=server_url)
        if not tm.ready:
            missing = "; ".join(f"{r.name} under {r.root}" for r in tm.repos if not r.ready)
            raise EnvironmentProblem(
                f"tier {requested} needs model weights that are missing: {missing}. "
                f"Download them with: {tm.download_command} (or use --tier flash)"
            )
        return requested, f"tier {requested} requested; its model weights are present"
    # with the real probe (``real_probe``: default, whether ``probe`` is ``tier_models``), a
    # machine with no model folder at all is answered without importing MinerU's registry
    folder = absent_model_folder() if (probe is tier_models if real_probe is None else real_probe) else None
    if folder is not None:
        return "flash", (f"tier auto: no model weights ({folder} does not exist), using flash (text PDFs "
                         "and Office files only; scans need OCR models)")
    for tier in TIERS_HIGH_TO_LOW[:-1]:
        tm = probe(tier, vlm_engine=vlm_engine, server_url=server_url)
        if tm.ready:
            return tier, f"tier auto: {tier} is the highest tier whose model weights are present"
    return "flash", "tier auto: no model weights found for basic/standard/advanced, using flash (text PDFs and Office files only; scans need OCR models)"
