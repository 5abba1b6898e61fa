"""Several processes for one simulation: JAX's multi-process runtime, started the pnn way.

One process per host (or several on one machine) each call :func:`initialize` before anything
else touches JAX; ``jax.devices()`` then lists every process's devices, and the meshes of
:mod:`pnn.sharded` (``DataParallel``, ``--devices N``, ``grid_split_simulate``) span them. JAX
runs such a program as one *multi-controller* computation: every process runs the same Python
code on the same global batch, each computes the rows (or grid slabs) its own devices hold, and
the collectives (on a CPU: gloo over TCP; on GPUs: NCCL) exchange halos and gather the outputs,
so every process ends with the full result.

    from pnn import distributed
    distributed.initialize("10.0.0.1:29500", num_processes=2, process_id=0)  # 1 on the other
    ...  # then as on one process: DataParallel(layer, devices=2)(x) spans both

From the command line nothing changes but the environment (read once by ``pnn``'s ``main``
through :func:`initialize_from_env`, before any command runs)::

    PNN_COORDINATOR=host:port  PNN_NUM_PROCESSES=N  PNN_PROCESS_ID=i
    [PNN_CPU_DEVICES=k]  [PNN_COORDINATOR_TIMEOUT=seconds]

``PNN_COORDINATOR=auto`` leaves the three to JAX's cluster detection (SLURM, Open MPI, Cloud
TPU). Process 0 serves the coordinator on ``port`` (all interfaces); the others connect to
``host:port``. See docs/workflows.md, "Several processes or hosts".

What JAX makes fatal, and what this module turns into an exception first:

* a malformed address, a host name that does not resolve, a ``process_id`` outside
  ``0 .. num_processes - 1``: ``ValueError`` before JAX is called;
* a coordinator port already in use on process 0: ``OSError`` (JAX's "Failed to start RPC
  server");
* a call after JAX started (any computation, ``jax.devices()``, ``jax.device_put``): a
  ``RuntimeError`` saying to call it first; a second call with other arguments, likewise (the
  same arguments again: nothing happens);
* a coordinator that never answers (wrong address, a firewall, process 0 not started): JAX
  waits ``timeout_s`` seconds, then *aborts the process* ("Deadline Exceeded"); that cannot be
  caught. Likewise, once running, a process that dies takes the others down (JAX's heartbeat).

Where JAX lacks CPU collectives (a jaxlib built without gloo), :func:`cpu_collectives` says why
and :func:`initialize` refuses a CPU run before connecting.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Mapping

__all__ = ["ENV", "cpu_collectives", "initialize", "initialize_from_env"]

#: the environment ``pnn`` reads at startup (:func:`initialize_from_env`)
ENV = ("PNN_COORDINATOR", "PNN_NUM_PROCESSES", "PNN_PROCESS_ID", "PNN_CPU_DEVICES",
       "PNN_COORDINATOR_TIMEOUT")

_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(\d{1,5})$")
_started: tuple | None = None  # the arguments of the call that started the runtime


def _whole(name: str, value, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or \
            (hi is not None and value > hi):
        rng = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} = {value!r}: expected a whole number {rng}")
    return value


def _check_address(coordinator: str) -> tuple[str, int]:
    """``(host, port)`` of ``"host:port"`` (``"[v6]:port"``), the host resolved."""
    m = _ADDRESS.match(coordinator) if isinstance(coordinator, str) else None
    if not m or not 1 <= int(m.group(2)) <= 65535:
        raise ValueError(
            f"coordinator = {coordinator!r}: expected 'host:port' (e.g. '10.0.0.1:29500', "
            f"'node01:29500', '[::1]:29500'), port 1 to 65535: process 0's address, which every "
            f"process can reach, and a free port on it")
    host = m.group(1).strip("[]")
    try:
        socket.getaddrinfo(host, int(m.group(2)))
    except socket.gaierror as e:
        raise ValueError(f"coordinator = {coordinator!r}: the host {host!r} does not resolve "
                         f"({e.strerror}); give process 0's IP address or a name this host "
                         f"knows") from None
    return host, int(m.group(2))


def cpu_collectives() -> tuple[str | None, str]:
    """``(implementation, reason)``: the CPU collectives this JAX would use across processes
    (``"gloo"``, ``"mpi"``), or ``None`` and why there are none (an old JAX without the
    option, or a jaxlib built without gloo). Imports JAX; starts nothing."""
    jax = _jax()
    lib = getattr(getattr(jax._src, "lib", None), "_jax", None)  # where gloo is compiled in
    name = getattr(jax.config, "jax_cpu_collectives_implementation", "missing")
    if name == "missing":
        return None, (f"JAX {jax.__version__} has no jax_cpu_collectives_implementation "
                      f"option: no collectives between CPU processes (JAX >= 0.4.36 has them)")
    if name in (None, "none"):
        name = "gloo"
    if name == "gloo" and not hasattr(lib, "make_gloo_tcp_collectives"):
        return None, f"this jaxlib {jax.__version__} was built without gloo CPU collectives"
    return name, f"{name} CPU collectives"


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, cpu_devices: int | None = None,
               timeout_s: int = 300) -> None:
    """Start JAX's multi-process runtime for this process (see the module docstring).

    Args:
        coordinator: ``"host:port"`` of process 0 (it serves there; the others connect), or
            ``None``/``"auto"`` for JAX's cluster detection (SLURM, Open MPI, Cloud TPU), which
            then also finds ``num_processes`` and ``process_id`` when they are ``None``.
        num_processes: how many processes take part (>= 1).
        process_id: this process's rank, ``0 .. num_processes - 1``, each used once.
        cpu_devices: virtual CPU devices this process contributes (``jax_num_cpu_devices``);
            ``None``: JAX's default (one, or ``XLA_FLAGS=--xla_force_host_platform_device_count``).
        timeout_s: how long to wait for every process to connect before JAX aborts.

    Raises:
        ValueError: a malformed or unresolvable address, a process id out of range, a bad count.
        OSError: process 0 cannot serve on the coordinator's port (in use).
        RuntimeError: JAX already started in this process (call this first), the runtime was
            already started with other arguments, or this JAX has no CPU collectives for a run
            on CPUs.
    """
    global _started
    auto = coordinator in (None, "auto")
    if not auto:
        _check_address(coordinator)
        _whole("num_processes", num_processes, 1)
        _whole(f"process_id (of num_processes = {num_processes})", process_id, 0,
               num_processes - 1)
    else:
        if num_processes is not None:
            _whole("num_processes", num_processes, 1)
        if process_id is not None:
            _whole("process_id", process_id, 0, None if num_processes is None
                   else num_processes - 1)
    if cpu_devices is not None:
        _whole("cpu_devices", cpu_devices, 1)
    _whole("timeout_s", timeout_s, 1)
    args = (None if auto else coordinator, num_processes, process_id, cpu_devices)
    if _started is not None:
        if args == _started:
            return
        raise RuntimeError(f"pnn.distributed.initialize: the runtime was already started with "
                           f"{_started}; it starts once per process (now asked {args})")
    _start(args, timeout_s)
    _started = args


def _jax():
    """JAX, imported when first needed: ``pnn``'s command line reads the environment through
    this module on every command, and most commands should not pay for importing JAX."""
    import jax

    return jax


def _start(args: tuple, timeout_s: int) -> None:
    """Set the CPU options, then ``jax.distributed.initialize``, its errors made clear."""
    jax = _jax()
    coordinator, num_processes, process_id, cpu_devices = args
    late = ("pnn.distributed.initialize must run before anything uses JAX in this process "
            "(any computation, jax.devices(), jax.device_put): call it first, or launch pnn "
            "with PNN_COORDINATOR & co. in its environment")
    try:
        impl, why = cpu_collectives()
        if impl is not None:
            jax.config.update("jax_cpu_collectives_implementation", impl)
        elif cpu_devices is not None or os.environ.get("JAX_PLATFORMS", "").startswith("cpu"):
            raise RuntimeError(f"several processes on CPUs need CPU collectives: {why}")
        if cpu_devices is not None:
            jax.config.update("jax_num_cpu_devices", cpu_devices)
        jax.distributed.initialize(coordinator, num_processes, process_id,
                                   initialization_timeout=timeout_s)
    except RuntimeError as e:
        if any(k in str(e) for k in ("before any JAX", "before backends", "called once")):
            raise RuntimeError(f"{late} ({' '.join(str(e).split())})") from None
        raise
    except Exception as e:  # JaxRuntimeError
        if "Failed to start RPC server" in str(e):
            raise OSError(f"coordinator {coordinator}: process 0 cannot serve on this port "
                          f"(in use, or not this host's address); choose another free port "
                          f"for every process") from None
        raise


def _int_env(env: Mapping[str, str], name: str, lo: int) -> int | None:
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < lo:
        raise ValueError(f"{name}={text!r}: expected a whole number >= {lo}")
    return value


def initialize_from_env(env: Mapping[str, str] | None = None) -> bool:
    """:func:`initialize` from ``PNN_COORDINATOR``, ``PNN_NUM_PROCESSES``, ``PNN_PROCESS_ID``
    (and the optional ``PNN_CPU_DEVICES`` and ``PNN_COORDINATOR_TIMEOUT``, default 300 s) in
    ``env`` (default: ``os.environ``); ``False``,
    touching nothing, when none of the first three is set; ``True`` once started.

    Raises:
        ValueError: a value that is not a number, or a coordinator address without the other
            two (``PNN_COORDINATOR=auto`` needs neither); what :func:`initialize` raises.
    """
    env = os.environ if env is None else env
    if not any(env.get(k, "").strip() for k in ENV[:3]):
        return False
    coordinator = env.get("PNN_COORDINATOR", "").strip() or None
    n = _int_env(env, "PNN_NUM_PROCESSES", 1)
    i = _int_env(env, "PNN_PROCESS_ID", 0)
    if coordinator not in (None, "auto") and (n is None or i is None):
        missing = [k for k, v in zip(ENV[1:3], (n, i)) if v is None]
        raise ValueError(f"PNN_COORDINATOR={coordinator} needs {' and '.join(missing)} as well "
                         f"(or PNN_COORDINATOR=auto under SLURM or Open MPI)")
    if coordinator is None:
        raise ValueError(f"{' and '.join(k for k in ENV[1:3] if env.get(k))} set without "
                         f"PNN_COORDINATOR=host:port (process 0's address; 'auto' under SLURM "
                         f"or Open MPI)")
    initialize(coordinator, n, i, cpu_devices=_int_env(env, "PNN_CPU_DEVICES", 1),
               timeout_s=_int_env(env, "PNN_COORDINATOR_TIMEOUT", 1) or 300)
    return True
