"""Check a Ray cluster before a run uses it: reachable, authenticated, same Ray and Python
versions as the driver, and what resources it has (CPUs, GPUs, alive nodes).

``convert --executor ray`` and ``doctor --executor ray`` both call :func:`check_ray_cluster`.
The check is bounded in time and quiet: it talks to the cluster's GCS once with Ray's own
client (so it sends exactly the token ``ray.init`` would send), captures the C++ client's
warnings instead of letting them stream to the terminal, and turns each failure into one line
that names the cause and the fix.

Facts about Ray 2.60 this relies on (``ray/_private/authentication/authentication_token_setup.py``,
``ray/_private/worker.py``, ``ray/exceptions.py`` of ray 2.60.0; measured on 127.0.0.1):

- Token authentication is on for a cluster started with ``RAY_AUTH_MODE=token``, and also for a
  ``ray start --head`` that finds a token (``RAY_AUTH_TOKEN``, the file named by
  ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``) while ``RAY_AUTH_MODE`` is unset. A new local
  cluster from ``ray.init()`` turns it on and writes ``~/.ray/auth_token`` when none exists.
- A driver sends its token only when ``RAY_AUTH_MODE=token``; connecting to an explicit address
  never turns that on by itself (only ``address="auto"`` does, when a token is found). A token
  in ``RAY_AUTH_TOKEN`` wins over the files.
- Without the right token the GCS answers ``Unauthenticated`` at once (about 0.4 s), but
  ``ray.init`` keeps retrying for minutes, printing ``gcs_client.cc: Failed to get cluster ID``
  each time. An unreachable address costs Ray's client about 13 s; a plain TCP connect first
  answers in milliseconds.
- The cluster's Ray and Python versions are in the GCS key-value store under
  ``CLUSTER_METADATA`` (namespace ``cluster``), the record ``ray.init`` itself compares.

Must not: start or stop a cluster, connect a driver (``ray.init``), or import Ray at module level.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

NEEDS_RAY = "--executor ray needs Ray 2.52 or newer: pip install 'mineru-cli[ray]'"
DEFAULT_TIMEOUT_S = 3.0
CONNECT_TIMEOUT_S = 3.0


@dataclass
class RayClusterCheck:
    """What :func:`check_ray_cluster` found.

    ``address``: as given (``auto``, ``host:port``, ``ray://host:port``); ``gcs_address``: the
    ``host:port`` probed. ``reachable``: a TCP connection to it opened. ``authenticated``: the
    GCS answered (None when not asked: unreachable, or a Ray Client address). ``auth``: what the
    driver sends, ``token`` or ``none``; ``token_source``: where its token comes from
    (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH=...``, ``~/.ray/auth_token``) or None.
    ``cpus``/``gpus``: totals over alive nodes (Ray's ``CPU``/``GPU`` resources). ``error``: one
    line naming the cause and the fix, or None when the cluster is usable. ``elapsed_s``: seconds.
    """

    address: str
    gcs_address: str | None = None
    reachable: bool = False
    authenticated: bool | None = None
    auth: str = "none"
    token_source: str | None = None
    driver_ray_version: str = ""
    cluster_ray_version: str | None = None
    driver_python_version: str = field(default_factory=platform.python_version)
    cluster_python_version: str | None = None
    nodes: int = 0
    cpus: float = 0.0
    gpus: float = 0.0
    note: str | None = None
    error: str | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), ok=self.ok)


def token_source(env: dict[str, str] | None = None, home: str | None = None) -> str | None:
    """Where Ray would take a driver's token from, in Ray's order: ``RAY_AUTH_TOKEN``, else the
    file named by ``RAY_AUTH_TOKEN_PATH`` (when that variable is set Ray reads only that file),
    else ``~/.ray/auth_token``; None when there is none. Only says where; never returns the
    token itself. See :func:`token_problem` for a source that is named but unusable."""
    env = os.environ if env is None else env
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    path = env.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return f"RAY_AUTH_TOKEN_PATH={path}" if os.path.isfile(path) else None
    default = os.path.join(home or os.path.expanduser("~"), ".ray", "auth_token")
    if os.path.isfile(default):
        return "~/.ray/auth_token"
    return None


def _non_empty_file(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return bool(fh.read(4096).strip())
    except OSError:
        return False


def token_problem(env: dict[str, str] | None = None, home: str | None = None) -> str | None:
    """With ``RAY_AUTH_MODE=token``: why the driver has no usable token, or None when it has one
    (or is not in token mode). Ray 2.60's C++ token loader aborts the whole process, with no
    Python exception, on a blank ``RAY_AUTH_TOKEN``, a missing or empty ``RAY_AUTH_TOKEN_PATH``
    file, or no token at all (``authentication_token_loader.cc``: ``Check failed: has_token``),
    so this is checked before any Ray client is made."""
    env = os.environ if env is None else env
    if env.get("RAY_AUTH_MODE", "").lower() != "token":
        return None
    if "RAY_AUTH_TOKEN" in env:
        return None if env["RAY_AUTH_TOKEN"].strip() else "RAY_AUTH_TOKEN is empty"
    path = env.get("RAY_AUTH_TOKEN_PATH")
    if path:
        if not os.path.isfile(path):
            return f"RAY_AUTH_TOKEN_PATH={path} does not exist"
        return None if _non_empty_file(path) else f"RAY_AUTH_TOKEN_PATH={path} is empty"
    default = os.path.join(home or os.path.expanduser("~"), ".ray", "auth_token")
    if os.path.isfile(default):
        return None if _non_empty_file(default) else "~/.ray/auth_token is empty"
    return "no token was found (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)"


def auth_failure_line(address: str, *, mode_token: bool, source: str | None) -> str:
    """The one line for a cluster that answered ``Unauthenticated``: the cause (no token sent,
    or the token sent is not the cluster's) and the fix (Ray 2.60's variables)."""
    where = f"the Ray cluster at {address}"
    get = "the cluster's token (`ray get-auth-token` on the head node)"
    if not mode_token and source:
        return (f"{where} requires token authentication and no token was sent: RAY_AUTH_MODE is not 'token' "
                f"(a token is in {source}, but Ray sends it only with RAY_AUTH_MODE=token): "
                f"set RAY_AUTH_MODE=token (and RAY_AUTH_TOKEN to {get} if that one is not it)")
    if not mode_token:
        return (f"{where} requires token authentication and no token was given: "
                f"set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to {get} (or RAY_AUTH_TOKEN_PATH=FILE)")
    if source is None:
        return (f"{where}: RAY_AUTH_MODE=token but no token was found: "
                f"set RAY_AUTH_TOKEN to {get} (or RAY_AUTH_TOKEN_PATH=FILE)")

    return (f"{where} rejected the token from {source} (wrong token): "
            f"set RAY_AUTH_TOKEN to {get}")


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Send file descriptor 2 to a temporary file for the duration (Ray's C++ client writes its
    warnings there, past Python's ``sys.stderr``); the captured lines land in the yielded list."""
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        try:
            sys.stderr.flush()
        except Exception:  # noqa: BLE001
            pass
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode("utf-8", "replace").splitlines())


def split_address(gcs: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) -> (host, port). Raises ValueError with the reason when
    there is no port or it is not in 1-65535."""
    host, sep, port = gcs.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {gcs!r}")
    if not 0 < int(port) < 65536:
        raise ValueError(f"port {port} is not in 1-65535")
    return host, int(port)


def _resolve(address: str) -> str:
    """``auto`` -> the local cluster's GCS ``host:port`` (Ray's own lookup: ``RAY_ADDRESS``, then
    the address of the last ``ray start`` on this machine); ``host:port`` unchanged.
    Raises ConnectionError when ``auto`` finds no cluster."""
    if address != "auto":
        return address
    from ray._private.services import canonicalize_bootstrap_address_or_die

    return canonicalize_bootstrap_address_or_die("auto")


def _gcs_facts(gcs: str, timeout_s: float) -> tuple[dict, list]:
    """(cluster metadata, alive nodes' ``resources_total`` dicts) from the GCS at ``gcs``.
    Raises Ray's AuthenticationError / RpcError as Ray's client does."""
    from ray._raylet import InnerGcsClient

    client = InnerGcsClient.standalone(gcs, None, int(timeout_s * 1000))
    raw = client.internal_kv_get(b"CLUSTER_METADATA", b"cluster", timeout_s)
    meta = json.loads(raw) if raw else {}
    alive = []
    for info in client.get_all_node_info(timeout=timeout_s).values():
        if int(info.state) == 0:  # GcsNodeInfo.ALIVE
            alive.append(dict(info.resources_total))
    return meta, alive


_TOKENLESS_PROBE = """
import sys
from ray._raylet import InnerGcsClient
try:
    InnerGcsClient.standalone(sys.argv[1], None, int(float(sys.argv[2]) * 1000)).internal_kv_get(b"x", b"cluster", float(sys.argv[2]))
except Exception as exc:
    print(type(exc).__name__)
else:
    print("accepted")
"""


def _cluster_takes_no_token(gcs: str, timeout_s: float) -> bool:
    """True when the GCS at ``gcs`` also answers a driver that sends no token: its token
    authentication is off. Asked from a child process with ``RAY_AUTH_MODE=disabled``, since a
    process's authentication mode is fixed when Ray's C++ config is first read."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["RAY_AUTH_MODE"] = "disabled"
    try:
        r = subprocess.run([sys.executable, "-c", _TOKENLESS_PROBE, gcs, str(timeout_s)], env=env,
                           capture_output=True, text=True, timeout=timeout_s + 30)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.stdout.strip().endswith("accepted")


def _log_captured(lines: list[str]) -> None:
    import logging

    log = logging.getLogger("mineru_cli")
    for line in lines:
        if line.strip():
            log.debug("ray: %s", line)


def check_ray_cluster(address: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                      need_gpus: bool = False) -> RayClusterCheck:
    """Probe the Ray cluster at ``address`` (``auto``, ``host:port`` or ``ray://host:port``).

    Bounded: a TCP connect (``CONNECT_TIMEOUT_S``), then one GCS client with ``timeout_s`` per
    call (Ray's client adds about 10 s to a GCS that never answers: about 15 s in all). Never
    raises; ``error`` holds one line naming the cause and the fix:

    - Ray not installed, or older than token authentication (Ray 2.52);
    - ``auto`` with no local cluster; an address that is not ``HOST:PORT``;
    - nothing listening (refused, timed out, unknown host), or no Ray GCS answering there;
    - token authentication: ``RAY_AUTH_MODE=token`` with no usable token (Ray would abort the
      process), none sent, the wrong one (see :func:`auth_failure_line`), or a token sent to a
      cluster whose authentication is off (its workers' calls would be refused);
    - the driver's Ray or Python version differs from the cluster's (Python compared to the
      level of Ray's ``RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL``, ``patch`` by default);
    - no alive node; with ``need_gpus``, no GPU in the cluster is a note only, since an
      autoscaler may add GPU nodes.

    A ``ray://`` (Ray Client) address is only checked for reachability: its server speaks
    another protocol, and Ray checks authentication and versions when it connects.
    """
    started = time.monotonic()
    check = RayClusterCheck(address=address)
    try:
        import ray
        from ray._raylet import InnerGcsClient  # noqa: F401
        from ray.exceptions import AuthenticationError  # noqa: F401
    except ImportError as exc:
        have = getattr(sys.modules.get("ray"), "__version__", None)
        check.error = NEEDS_RAY + (f" (found Ray {have}: {exc})" if have else "")
        return check
    check.driver_ray_version = ray.__version__
    try:
        _probe(check, address, timeout_s, need_gpus)
    finally:
        check.elapsed_s = round(time.monotonic() - started, 3)
    return check


def _python_matches(driver: str, cluster: str) -> bool:
    level = os.environ.get("RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL", "patch")
    n = 2 if level == "minor" else 3
    return driver.split(".")[:n] == cluster.split(".")[:n]


def _probe(check: RayClusterCheck, address: str, timeout_s: float, need_gpus: bool) -> None:
    import logging

    from ray.exceptions import AuthenticationError

    client = address.startswith("ray://")
    try:
        gcs = address[len("ray://"):] if client else _resolve(address)
    except ConnectionError:
        check.error = (f"no local Ray cluster found for --ray-address {address} "
                       f"(start one with `ray start --head`, or give --ray-address HOST:PORT)")
        return
    check.gcs_address = gcs
    where = address if gcs == address or client else f"{address} ({gcs})"
    try:
        host, port = split_address(gcs)
    except ValueError as exc:
        check.error = f"--ray-address {address}: {exc}"
        return
    if address == "auto" and not os.environ.get("RAY_AUTH_MODE"):
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )

        auth_log = logging.getLogger("ray._private.authentication")
        level = auth_log.level
        auth_log.setLevel(logging.ERROR)
        try:
            maybe_enable_token_auth_if_token_available(warn_if_disabled=False)  # what ray.init("auto") does
        finally:
            auth_log.setLevel(level)
    mode_token = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
    check.token_source = token_source()
    check.auth = "token" if mode_token and check.token_source else "none"
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        what = "its Ray Client port, 10001 by default" if client else "its GCS port, 6379 by default"
        check.error = (f"cannot reach the Ray cluster at {where}: {reason} "
                       f"(is `ray start --head` running there, and is this {what}?)")
        return
    check.reachable = True
    if client:
        check.note = ("Ray Client address: only reachability is checked here; Ray checks authentication "
                      "and versions when it connects (needs pip install 'ray[client]')")
        return
    problem = token_problem()
    if problem:
        check.auth = "none"
        check.error = (f"the Ray cluster at {where}: RAY_AUTH_MODE=token but {problem}: set RAY_AUTH_TOKEN "
                       f"to the cluster's token (`ray get-auth-token` on the head node), or unset "
                       f"RAY_AUTH_MODE if the cluster has authentication off")
        return
    try:
        with _captured_stderr() as captured:
            meta, alive = _gcs_facts(gcs, timeout_s)
    except AuthenticationError:
        _log_captured(captured)
        check.authenticated = False
        check.error = auth_failure_line(where, mode_token=mode_token, source=check.token_source)
        return
    except Exception as exc:  # noqa: BLE001 - RpcError (timed out, unavailable) and the like
        _log_captured(captured)
        check.error = (f"the Ray cluster at {where} does not answer: "
                       f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]} (is this a Ray GCS port?)")
        return
    _log_captured(captured)
    check.authenticated = True
    if mode_token and _cluster_takes_no_token(gcs, timeout_s):
        check.error = (f"the Ray cluster at {where} has token authentication off, but RAY_AUTH_MODE=token "
                       f"here: a driver in token mode refuses the calls of the cluster's workers, so every "
                       f"document would fail: unset RAY_AUTH_MODE (and RAY_AUTH_TOKEN)")
        return
    check.cluster_ray_version = meta.get("ray_version")
    check.cluster_python_version = meta.get("python_version")
    check.nodes = len(alive)
    check.cpus = float(sum(r.get("CPU", 0.0) for r in alive))
    check.gpus = float(sum(r.get("GPU", 0.0) for r in alive))
    if check.cluster_ray_version and check.cluster_ray_version != check.driver_ray_version:
        check.error = (f"Ray version mismatch with the cluster at {where}: driver {check.driver_ray_version}, "
                       f"cluster {check.cluster_ray_version}: install the same Ray on both "
                       f"(pip install 'ray=={check.cluster_ray_version}')")
    elif check.cluster_python_version and not _python_matches(check.driver_python_version,
                                                              check.cluster_python_version):
        check.error = (f"Python version mismatch with the Ray cluster at {where}: driver "
                       f"{check.driver_python_version}, cluster {check.cluster_python_version}: "
                       f"run the driver with the cluster's Python")
    elif not alive:
        check.error = f"the Ray cluster at {where} has no alive node"
    elif need_gpus and check.gpus == 0:
        check.note = (f"the Ray cluster at {where} has no GPU now: GPU workers wait until a node "
                      f"with a GPU joins (or use --backend cpu)")
