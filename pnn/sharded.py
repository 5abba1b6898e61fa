"""Data-parallel simulation across devices with JAX's own sharding.

:class:`DataParallel` wraps any simulator (a :class:`~pnn.sim.base.AbstractSimulator`: acoustic,
optical, microwave, or one of yours) and splits every batch of drives across devices along the
batch axis: a 1-D :class:`jax.sharding.Mesh` named ``"batch"`` over the chosen devices, the
drives placed with a :class:`~jax.sharding.NamedSharding` ``P("batch", None)``, and the
simulator's pure-JAX ``forward`` run on each device's rows by :func:`jax.shard_map`. Samples
are independent, so no device talks to another; the output comes back sharded the same way.

    from pnn.sharded import DataParallel
    layer = DataParallel(AcousticLayer(8, 8, nx=128, ny=128), devices=2)
    y = layer(x)            # the same as the bare layer's output, to float rounding

Why a wrapper and not a ``devices=`` argument on each simulator: one implementation serves
every simulator (and every simulator written later) without touching its physics; the wrapped
layer is itself an ``AbstractSimulator``, so it validates its input and parameters, is counted by
the ledger, pads its batches, and is differentiable (in-silico training backpropagates through
``shard_map``) like the layer it wraps. Perturbation wrappers (:mod:`pnn.perturb`) go outside:
``Drift(DataParallel(sim))`` is fine; the wrapper exposes the simulator as ``.layer``.

A batch that does not divide by the number of devices is padded with the range's lower bound
and the padding is dropped from the output. Deterministic layers (every registry default) give
the same outputs on any number of devices; a layer with detector noise draws each shard's noise
from ``fold_in(key, shard index)``: the same statistics, not the same values.

For grids too large for one device, :func:`grid_split_simulate` splits the acoustic grid's
rows over devices instead, exchanging one halo row with each neighbour per time step
(``shard_map`` + ``ppermute``); it gives the single-device field to float32 rounding
(bit for bit where XLA fuses both alike).

From the command line and experiment files, ``--devices N`` / ``devices = N`` wraps every
simulator layer in this class (:func:`data_parallel`, through
:func:`pnn.registry.build_layers`); see docs/workflows.md, "Several devices".

On CPU, test with several virtual devices (set before jax is imported)::

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python -c "..."

Several GPUs on one host: ``DataParallel(layer, devices=None)`` uses every device of
``jax.devices()`` (or pass ``devices=N`` for the first N, or a list of devices).

Several processes or hosts (:mod:`pnn.distributed`): start one process per host (or several on
one machine), each calling :func:`pnn.distributed.initialize` (``PNN_COORDINATOR`` & co. for
the command line) before anything else touches JAX; ``jax.devices()`` then lists every
process's devices, and a mesh of N of them takes them in turn from each process (process 0's
first, process 1's first, ..., then each one's second), so that every process holds part of
it (N must be at least the number of processes; ``--devices 1``, :func:`data_parallel` with
1, leaves the layer bare, and each process runs it whole on its own). Every process must call the layer with the same global batch (build it
from the same seed): each computes its own devices' rows from its copy. The output is then
gathered on the device (an all-gather over the mesh, inside the same jitted program), so each
process gets the full result, an array replicated on every device of the mesh that
``np.asarray`` reads; :func:`grid_split_simulate` gathers its field the same way. To feed
different rows from each process instead, assemble a global array with
``jax.make_array_from_process_local_data(layer.sharding(), rows)`` and pass that.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from pnn.layer import LayerSpec
from pnn.sim.acoustic import AcousticLayer
from pnn.sim.base import AbstractSimulator

__all__ = ["DataParallel", "batch_mesh", "check_devices", "data_parallel", "grid_split_simulate",
           "spans_processes"]

AXIS = "batch"


def batch_mesh(devices: int | Sequence | None = None) -> Mesh:
    """A 1-D mesh named ``"batch"`` over ``devices``: ``None`` for all of ``jax.devices()``,
    an int N for the first N (taken in turn from each process when there are several), or a
    sequence of devices.

    Raises:
        ValueError: when more devices are asked for than exist (the message names the XLA flag
            that makes virtual CPU devices), or N < 1, or, with several processes, when the
            mesh leaves a process without a device.
    """
    avail = jax.devices()
    if devices is None:
        devs = list(avail)
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        n = check_devices(int(devices))
        devs = _in_turn(avail)[:n]
    else:
        devs = list(devices)
        if not devs:
            raise ValueError("devices: an empty device list")
    held = {d.process_index for d in devs}
    if jax.process_count() > 1 and len(held) < jax.process_count():
        idle = sorted(set(range(jax.process_count())) - held)
        raise ValueError(
            f"devices: a mesh of {len(devs)} device{'s' if len(devs) > 1 else ''} leaves "
            f"process{'es' if len(idle) > 1 else ''} {', '.join(map(str, idle))} of "
            f"{jax.process_count()} without one, and every process runs the same program on "
            f"its own devices; ask for at least {jax.process_count()} devices (or run the "
            f"bare layer, as --devices 1 does: each process then runs it whole)")
    return Mesh(np.array(devs), (AXIS,))


def _in_turn(devices) -> list:
    """``devices`` taken in turn from each process (the first of each, then the second...),
    so that the first N span as many processes as they can; one process's order unchanged."""
    by_process: dict[int, list] = {}
    for d in devices:
        by_process.setdefault(d.process_index, []).append(d)
    queues = [by_process[p] for p in sorted(by_process)]
    return [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)]


def spans_processes(mesh: Mesh) -> bool:
    """Whether ``mesh`` holds devices of more than one process (its outputs are then gathered
    so that every process reads them whole)."""
    return len({d.process_index for d in mesh.devices.flat}) > 1


def check_devices(n, *, what: str = "devices") -> int:
    """``n`` if it is a number of devices JAX can give: an integer from 1 to
    ``len(jax.devices())``.

    Raises:
        ValueError: naming ``what`` (e.g. ``"--devices"``), how many devices JAX sees (and which)
            and how to get more: on a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
            in the environment before JAX is imported.
    """
    said = f"{what} {n!r}" if what.startswith("--") else f"{what} = {n!r}"
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{said}: expected a whole number of devices >= 1 (1: no sharding)")
    n = int(n)
    avail = jax.devices()
    if n > len(avail):
        kinds = ", ".join(str(d) for d in avail)
        over = f" over {jax.process_count()} processes" if jax.process_count() > 1 else ""
        raise ValueError(
            f"{said}: JAX sees only {len(avail)} device{'s' if len(avail) > 1 else ''}{over} "
            f"({kinds}, backend {jax.default_backend()}); on a CPU, set XLA_FLAGS="
            f"--xla_force_host_platform_device_count={n} in the environment before pnn starts "
            f"(JAX reads it once, at import) to get {n} virtual CPU devices; with GPUs, make "
            f"{n} visible (CUDA_VISIBLE_DEVICES) or ask for at most {len(avail)}")
    return n


def data_parallel(layer, devices: int, *, what: str = "devices"):
    """``layer`` itself when ``devices == 1``, else ``DataParallel(layer, devices)``; a layer
    that is not a pure-JAX simulator (a driver, a recorded surrogate, a plug-in's own class)
    is refused with a ``ValueError`` naming ``what``."""
    if isinstance(devices, bool) or not isinstance(devices, (int, np.integer)) or devices < 1:
        check_devices(devices, what=what)  # raises
    if devices == 1:
        return layer
    n = int(devices)
    if not isinstance(layer, AbstractSimulator):
        name = getattr(getattr(layer, "spec", None), "name", type(layer).__name__)
        said = f"{what} {n}" if what.startswith("--") else f"{what} = {n}"
        raise ValueError(
            f"{said}: the layer {name!r} ({type(layer).__name__}) is not a pure-JAX "
            f"simulator (pnn.sim.base.AbstractSimulator), so its batch cannot be sharded over "
            f"devices; run it on one device (devices = 1)")
    return DataParallel(layer, devices=check_devices(n, what=what))


class DataParallel(AbstractSimulator):
    """``layer`` with every batch split across ``devices`` (see the module docstring).

    Args:
        layer: a simulator (pure-JAX ``forward``); not a driver.
        devices: ``None`` (all devices), an int N (the first N), or a list of devices.
    """

    physical_scalars: ClassVar[tuple[str, ...]] = ()

    layer: AbstractSimulator
    mesh: Mesh = eqx.field(static=True)

    def __init__(self, layer, devices: int | Sequence | None = None):
        if not isinstance(layer, AbstractSimulator):
            raise TypeError(
                f"DataParallel wraps a simulator (pnn.sim.base.AbstractSimulator) whose forward "
                f"is pure JAX; got {type(layer).__name__}. Instruments cannot be sharded")
        self.layer = layer
        self.mesh = batch_mesh(devices)

    def __getattr__(self, name):
        # only reached for names the wrapper lacks: the wrapped simulator's fields (its physical
        # scalars, e.g. ``speed_scale``), so that perturbations and schedules that change a
        # named parameter (param_drift, jump with param, pnn adapt) reach it through the
        # wrapper; eqx.tree_at replaces the inner leaf
        if name.startswith("_") or name in ("layer", "mesh"):
            raise AttributeError(name)
        return getattr(self.layer, name)

    @property
    def spec(self) -> LayerSpec:
        return self.layer.spec

    @property
    def n_devices(self) -> int:
        return int(self.mesh.size)

    @property
    def pad_batches(self) -> bool:  # type: ignore[override]
        return getattr(self.layer, "pad_batches", True)

    @property
    def flops_per_sample(self) -> int:
        return self.layer.flops_per_sample

    def validate_params(self) -> None:
        self.layer.validate_params()

    def params(self):
        return self.layer.params()

    def noise_key(self, key):
        return self.layer.noise_key(key)

    def sharding(self) -> NamedSharding:
        """Where a batch of drives lives: rows split over the ``"batch"`` axis."""
        return NamedSharding(self.mesh, P(AXIS, None))

    def forward(self, x, *, key=None):
        n = self.n_devices
        b = x.shape[0]
        pad = (-b) % n
        if pad:
            x = jnp.concatenate(
                [x, jnp.full((pad, x.shape[1]), self.spec.lo, dtype=x.dtype)])
        x = jax.lax.with_sharding_constraint(x, self.sharding())
        inner = self.layer

        def local(xs, k):
            if k is not None:
                k = jax.random.fold_in(k, jax.lax.axis_index(AXIS))
            return inner.forward(xs, key=k)

        key_spec = None if key is None else P()
        y = jax.shard_map(local, mesh=self.mesh, in_specs=(P(AXIS, None), key_spec),
                          out_specs=P(AXIS, None), check_vma=False)(x, key)
        if spans_processes(self.mesh):  # every process reads the whole output
            y = jax.lax.with_sharding_constraint(y, NamedSharding(self.mesh, P()))
        return y[:b] if pad else y


# ------------------------------------------------------------------ grid splitting (acoustic)
def grid_split_simulate(layer, x, devices: int | Sequence | None = None):
    """The acoustic FDTD with its grid split across devices: for grids too large for one.

    The ``nx`` rows of the grid are divided evenly over a 1-D mesh named ``"x"``; every device
    holds its slab of the fields (cells-first, ``(nx / n, ny, batch)``) and, each time step,
    exchanges one halo row with each neighbour by :func:`jax.lax.ppermute` inside
    :func:`jax.shard_map` (the devices at the two ends receive zeros: the grid's Dirichlet
    walls). Probes are read where they live and summed over devices (``psum``; one device holds
    each probe, so the sum is exact). The arithmetic per cell is the layer's own
    (:meth:`~pnn.sim.acoustic.AcousticLayer._leapfrog`), in the same order.

    Args:
        layer: an :class:`~pnn.sim.acoustic.AcousticLayer` (unwrapped), ``nx`` divisible by the
            number of devices.
        x: drives ``(batch, n_in)``, already validated.
        devices: as for :func:`batch_mesh`.

    Returns:
        ``(traces, field)``: probe pressures ``(n_steps, batch, n_out)`` and the final field
        ``(batch, nx, ny)``, as :meth:`AcousticLayer.simulate` gives them. When the devices
        belong to several processes (:mod:`pnn.distributed`), every process passes the same
        ``x`` and receives both whole (the field gathered from the slabs on the device).
    """
    if not isinstance(layer, AcousticLayer):
        raise TypeError(f"grid_split_simulate splits an AcousticLayer's grid; got "
                        f"{type(layer).__name__}")
    # each process's devices side by side: one halo crosses between processes, not every one
    mesh = Mesh(np.array(sorted(batch_mesh(devices).devices.flat, key=lambda d: d.process_index)),
                ("x",))
    n = int(mesh.size)
    if layer.nx % n:
        raise ValueError(f"{layer.spec.name}: nx = {layer.nx} rows do not split evenly over "
                         f"{n} devices; choose nx divisible by {n}")
    dtype = jnp.result_type(jnp.asarray(x).dtype, jnp.float32)
    x = jnp.asarray(x, dtype)
    src = layer._source_cells_first(x)  # (nx, ny, batch)
    delta, mask, sigma = (a.astype(dtype)[..., None]
                          for a in (layer.delta, layer.nl_mask, layer.sigma))
    probes = np.zeros((layer.nx, layer.ny, layer.spec.n_out), np.float32)
    for j, (px, py) in enumerate(layer.probe_xy):
        probes[px, py, j] = 1.0
    probes = jnp.asarray(probes, dtype)
    wave = layer.waveform.astype(dtype)
    fwd = [(i, i + 1) for i in range(n - 1)]
    bwd = [(i + 1, i) for i in range(n - 1)]

    def laplacian(u):
        top = jax.lax.ppermute(u[-1:], "x", fwd)  # the previous slab's last row
        bottom = jax.lax.ppermute(u[:1], "x", bwd)  # the next slab's first row
        p = jnp.concatenate([top, u, bottom], axis=0)
        p = jnp.pad(p, [(0, 0), (1, 1)] + [(0, 0)] * (u.ndim - 2))
        return p[2:, 1:-1] + p[:-2, 1:-1] + p[1:-1, 2:] + p[1:-1, :-2] - 4.0 * u

    def local(src, delta, mask, sigma, probes, wave):
        def body(carry, w):
            u_prev, u = carry
            u_next = layer._leapfrog(u_prev, u, src * w, laplacian(u), delta, mask, sigma)
            out = jax.lax.psum(jnp.einsum("xyb,xyo->bo", u_next, probes), "x")
            return (u, u_next), out

        u0 = jnp.zeros_like(src)
        (_, u), traces = jax.lax.scan(body, (u0, u0), wave)
        return traces, u

    rows = P("x")
    split = jax.shard_map(local, mesh=mesh, in_specs=(rows, rows, rows, rows, rows, P()),
                          out_specs=(P(), rows), check_vma=False)

    @jax.jit
    def run(*arrays):
        traces, field = split(*arrays)
        if spans_processes(mesh):  # every process reads the whole field
            field = jax.lax.with_sharding_constraint(field, NamedSharding(mesh, P()))
        return traces, jnp.moveaxis(field, -1, 0)

    return run(src, delta, mask, sigma, probes, wave)
