"""Which backend runs MinerU here: five small rooms, imported one way
(machine <- probes; machine <- rules <- decision <- lanes).

- ``machine``: the probes' results as data (GPUs, engines, remote server, MinerU's VLM settings);
- ``probes``: NVML, package metadata, the remote server's ``/v1/models`` (bounded in time);
- ``rules``: the compatibility rules as data, each with its source;
- ``decision`` and ``lanes``: pure, from probes and settings to a backend, a tier and worker lanes.

This ``__init__`` only re-exports them (``from mineru_cli.backend import decide_backend``).
Must not: hold code of its own, or import pynvml, mineru or torch (nothing here does at module level).

Flow (what ``convert`` and ``doctor`` call)::

    machine = probe_machine(settings)            # GPUs (NVML), engines, remote server, model weights
    decision = decide_backend(settings, machine)  # backend + tier + reasons, or EnvironmentProblem (exit 3)
    lanes = worker_lanes(decision, settings)      # one worker pool per lane, started with lane.env

Everything MinerU needs to know reaches it through its own configuration variables
(``MINERU_DEVICE_MODE``, ``MINERU_MODEL_VLM_ENGINE``, ``MINERU_MODEL_VLM_SERVER_URL``, ...: the
names come from ``mineru/config.py`` and ``mineru/model/runtime/device.py`` of MinerU 4.0.12); MinerU
is never patched.

The compatibility rules are data: ``rules.RULES``, each with the source of the fact it encodes.

Nothing heavy is imported at module level (no pynvml, no mineru, no torch): the probes import
lazily, and the engines are read from package metadata only.
"""

from __future__ import annotations

from .machine import (AUTO_ORDER, DRIVER_MISMATCH_EXPLANATION, ENGINE_DISTRIBUTIONS, GIB, GPU_ENGINES, INSTALL_HINTS,
                      TORCH_STACK, VLM_ENGINE_OF, architecture_name, EngineInfo, GpuInfo, GpuProbe, MachineProbe,
                      RemoteProbe, VlmSettings)
from .probes import (models_url, probe_engines, probe_gpus, probe_machine, probe_remote, ProbeTimeout,
                     read_mineru_vlm_settings, torch_build)
from .rules import RULES, CompatRule, RuleOutcome, evaluate_rules, rules_table
from .decision import BackendDecision, decide_backend, flash_without_probing
from .lanes import WorkerLane, worker_lanes

__all__ = [
    "GIB", "DRIVER_MISMATCH_EXPLANATION", "GPU_ENGINES", "AUTO_ORDER", "VLM_ENGINE_OF", "ENGINE_DISTRIBUTIONS",
    "TORCH_STACK", "INSTALL_HINTS", "architecture_name", "GpuInfo", "GpuProbe", "EngineInfo", "RemoteProbe",
    "VlmSettings", "MachineProbe", "ProbeTimeout", "probe_gpus", "torch_build", "probe_engines", "models_url",
    "probe_remote", "read_mineru_vlm_settings", "probe_machine", "CompatRule", "RULES", "RuleOutcome",
    "evaluate_rules", "rules_table", "BackendDecision", "flash_without_probing", "decide_backend", "WorkerLane",
    "worker_lanes"
]
