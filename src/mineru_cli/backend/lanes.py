"""Worker lanes for a decision: one lane per GPU (its ``CUDA_VISIBLE_DEVICES`` and MinerU variables),
or the CPU lane sized from cores and memory, or the remote lane (``--max-concurrency``). Pure.

Must not: probe GPUs or start processes (the executor starts the lanes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .decision import BackendDecision
from .machine import GPU_ENGINES, _effective_cpus


@dataclass
class WorkerLane:
    """One worker pool: ``workers`` processes started with ``env`` added to the environment.

    ``label`` names the lane in logs (``gpu0-vllm``, ``cpu``, ``remote``).
    """

    label: str
    env: dict[str, str]
    workers: int


def worker_lanes(decision: BackendDecision, settings: Any, *, cpus: int | None = None,
                 available_memory: int | None = None) -> list[WorkerLane]:
    """The worker layout for ``decision``.

    - GPU engines: one lane per GPU in ``decision.gpus``, 1 worker each (one model load per GPU;
      ``--workers`` does not apply, use ``--gpus``), env ``CUDA_VISIBLE_DEVICES=<index>`` with
      ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (so CUDA numbers GPUs as NVML/nvidia-smi do; CUDA's default
      is fastest first), ``MINERU_DEVICE_MODE=cuda``, ``MINERU_MODEL_VLM_ENGINE``,
      ``MINERU_MODEL_SMALL_BACKEND``, an empty ``MINERU_MODEL_VLM_SERVER_URL`` (so a server in
      MinerU's config.yaml does not override the local engine) and the rules' per-GPU variables
      (``MINERU_LMDEPLOY_BACKEND``).
    - cpu: one lane, ``settings.workers`` or :func:`mineru_cli.settings.default_workers`, env
      ``MINERU_DEVICE_MODE=cpu``, ``MINERU_MODEL_VLM_ENGINE=llama-cpp``, ``MINERU_MODEL_SMALL_BACKEND=onnx``,
      ``MINERU_TABLE_DEVICE=cpu``, ``CUDA_VISIBLE_DEVICES=`` (empty) and ONNX/torch threads per worker
      ``cores // workers`` (``MINERU_INTRA_OP_NUM_THREADS``, ``MINERU_CPU_NUM_THREADS``; MinerU's default
      is 4 per ONNX session) unless already set in the environment.
    - remote: one lane, ``settings.workers`` or ``min(settings.max_concurrency, default_workers())``,
      env ``MINERU_MODEL_VLM_SERVER_URL=<url>`` and ``MINERU_MODEL_VLM_MAX_CONCURRENCY`` =
      ``max_concurrency // workers`` (MinerU's per-process limit, so the total stays bounded), small
      models on the CPU as above.

    Variable names: mineru/config.py (``MINERU_<PATH>`` overrides ``model.vlm.engine`` etc.),
    mineru/model/runtime/device.py (``MINERU_DEVICE_MODE``), mineru/model/runtime/onnx.py
    (``MINERU_INTRA_OP_NUM_THREADS``, ``MINERU_TABLE_DEVICE``), mineru/model/vlm/runtime.py
    (``MINERU_LMDEPLOY_BACKEND``). Raises ValueError for a decision that is not ok.
    """
    from ..settings import default_workers

    if not decision.ok:
        raise ValueError(f"no worker layout for a failed decision: {'; '.join(decision.problems)}")
    ncpus = cpus or _effective_cpus()
    if decision.backend in GPU_ENGINES:
        lanes = []
        for index in decision.gpus:
            env = {
                "CUDA_VISIBLE_DEVICES": str(index),
                "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                "MINERU_DEVICE_MODE": "cuda",
                "MINERU_MODEL_VLM_ENGINE": str(decision.vlm_engine),
                "MINERU_MODEL_SMALL_BACKEND": decision.small_backend,
                "MINERU_MODEL_VLM_SERVER_URL": "",
            }
            env.update(decision.gpu_env.get(index, {}))
            lanes.append(WorkerLane(label=f"gpu{index}-{decision.backend}", env=env, workers=1))
        return lanes
    cpu_env = {
        "MINERU_DEVICE_MODE": "cpu",
        "MINERU_MODEL_SMALL_BACKEND": "onnx",
        "MINERU_TABLE_DEVICE": "cpu",
        "CUDA_VISIBLE_DEVICES": "",
    }
    if decision.backend == "cpu":
        workers = settings.workers or default_workers(available_memory, ncpus)
        env = dict(cpu_env, MINERU_MODEL_VLM_ENGINE="llama-cpp", MINERU_MODEL_VLM_SERVER_URL="")
        threads = str(max(1, ncpus // workers))
        for var in ("MINERU_INTRA_OP_NUM_THREADS", "MINERU_CPU_NUM_THREADS"):
            if var not in os.environ:
                env[var] = threads
        return [WorkerLane(label="cpu", env=env, workers=workers)]
    if decision.backend == "remote":
        workers = settings.workers or min(settings.max_concurrency, default_workers(available_memory, ncpus))
        env = dict(cpu_env, MINERU_MODEL_VLM_SERVER_URL=str(decision.server_url),
                   MINERU_MODEL_VLM_MAX_CONCURRENCY=str(max(1, settings.max_concurrency // workers)))
        return [WorkerLane(label="remote", env=env, workers=workers)]
    raise ValueError(f"unknown backend {decision.backend!r}")
