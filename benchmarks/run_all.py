"""Every pnn performance benchmark in one run: writes ``benchmarks/results/*.json`` and
``benchmarks/results/summary.md``.

    python benchmarks/run_all.py            # the full run (under 20 minutes on 2 cores)
    python benchmarks/run_all.py --quick    # about 2 minutes: smaller sizes, fewer repeats
    python benchmarks/run_all.py --only fdtd,roofline

Sections (each writes ``results/<name>.json``):

``fdtd``
    The acoustic FDTD on a 128 x 128 grid, 1,000 steps, batch 32, float32 (``--fdtd-sizes``
    adds others): pnn's :class:`~pnn.sim.acoustic.AcousticLayer` (jitted ``forward``), a batched
    NumPy implementation of the same update written here (:func:`numpy_fdtd`, on the CPU), and
    wavetorch 0.2.1 on PyTorch (on CUDA when JAX runs on a GPU) when it is importable (the
    ``[bench]`` extra; see :func:`import_wavetorch` for the shims it needs on a current stack).
    Same grid, steps, batch and dtype, in the same process; pnn and NumPy timed in interleaved
    rounds (6 pnn runs and 3 NumPy runs in all), wavetorch after them; minimum reported.
    Cell-updates per second = batch x nx x ny x steps / seconds.
``roofline``
    Machine bandwidth (a NumPy copy, at DRAM size and at the stencil's working-set size) and
    peak FLOP/s (a large float32 NumPy matmul), the stencil's FLOPs and compulsory bytes per
    cell-update, the attainable cell-update rate, and pnn's fraction of it.
``batch``
    Samples per second of the three simulators against batch size 1 ... 256 (registry default
    sizes, ``n_in=14, n_out=20``, called through the public, validating ``__call__``).
``training``
    Short runs of phyll, pat, insilico and zo on each simulator (vowels, seed 0): learning
    throughput and costs from the records (``train_queries``, ``digital_flops``, ``wall_s``,
    evaluation apart) and the cost to a target validation accuracy (:func:`pnn.stats.
    cost_to_target`, target = 95 % of the best method's validation accuracy on that system).
``tuned``
    PhyLL against PAT's *tuned* validation accuracy on each simulator, per seed, read from the
    comparison protocol's records (``experiments/results/protocol_<system>_vowels``): the
    learning costs at the first epoch reaching PAT's best validation accuracy. Nothing trained.
``memory``
    Peak memory of one PhyLL step and of one in-silico step as the simulated time steps grow
    from 500 to 4,000 (acoustic, registry default grid, batch 32), each in its own subprocess:
    peak RSS (``resource.getrusage``) above the process's RSS before the first step, and XLA's
    compiled temporary-buffer size for the in-silico gradient. In-silico is measured with the
    default ``jax.checkpoint``-ed time loop and with ``remat_every=0`` (plain scan).
``scaling``
    PhyLL (acoustic) time per training epoch against dataset size and grid area, with the
    fitted log-log exponent.
"""

from __future__ import annotations

import argparse
import json

import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
SECTIONS = ("fdtd", "roofline", "batch", "training", "tuned", "memory", "scaling")
SIMULATORS = ("acoustic", "optical", "microwave")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine() -> dict:
    return {"python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor(), "cpu_count": os.cpu_count(),
            "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "jax": jax.__version__, "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "device_kind": jax.devices()[0].device_kind, "numpy": np.__version__}


def best_time(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), times


# --------------------------------------------------------------------------------- FDTD peers
def numpy_fdtd(layer, x: np.ndarray) -> np.ndarray:
    """The acoustic layer's update (speed law, 5-point Laplacian, damped leapfrog, point
    sources, mean-square probes) in NumPy, vectorised over the batch: fields ``(batch, nx, ny)``
    float32, every array preallocated and updated in place where NumPy allows."""
    dt, dx = np.float32(layer.dt), np.float32(layer.dx)
    f32 = np.float32
    c0, c_nl, u_sat, s = (f32(float(getattr(layer, k)))
                          for k in ("c0", "c_nl", "u_sat", "speed_scale"))
    amp = f32(float(layer.source_amplitude)) * f32(layer.dt**2 / layer.dx**2)
    lin = (s * c0 * (1 + np.asarray(layer.delta, f32))).astype(f32)
    nl = (s * c_nl * np.asarray(layer.nl_mask, f32)).astype(f32)
    k = (0.5 * np.asarray(layer.sigma, f32) * dt).astype(f32)
    a_prev = (1 - k).astype(f32)
    inv = (1 / (1 + k)).astype(f32)
    r = f32((dt / dx) ** 2)
    b, nx, ny = x.shape[0], layer.nx, layer.ny
    sx = np.array([p[0] for p in layer.src_xy])
    sy = np.array([p[1] for p in layer.src_xy])
    px = np.array([p[0] for p in layer.probe_xy])
    py = np.array([p[1] for p in layer.probe_xy])
    src_amp = (amp * x.astype(f32))  # (batch, n_in)
    wave = np.asarray(layer.waveform, f32)
    u_prev = np.zeros((b, nx, ny), f32)
    u = np.zeros((b, nx, ny), f32)
    u_next = np.zeros((b, nx, ny), f32)
    lap = np.empty((b, nx, ny), f32)
    c = np.empty((b, nx, ny), f32)
    acc = np.zeros((b, len(px)), f32)
    usat2 = u_sat * u_sat
    for w in wave:
        # Laplacian (Dirichlet zeros beyond the grid)
        np.multiply(u, f32(-4.0), out=lap)
        lap[:, 1:, :] += u[:, :-1, :]
        lap[:, :-1, :] += u[:, 1:, :]
        lap[:, :, 1:] += u[:, :, :-1]
        lap[:, :, :-1] += u[:, :, 1:]
        # speed law c = s (c0 (1 + delta) + c_nl m min(u^2, u_sat^2))
        np.multiply(u, u, out=c)
        np.minimum(c, usat2, out=c)
        c *= nl
        c += lin
        # u_next = (2u - (1-k) u_prev + (c dt/dx)^2 lap + f) / (1 + k)
        c *= c
        c *= r
        c *= lap
        np.multiply(a_prev, u_prev, out=u_next)
        np.subtract(c, u_next, out=u_next)
        u_next += u
        u_next += u
        u_next[:, sx, sy] += src_amp * f32(w)
        u_next *= inv
        acc += u_next[:, px, py] ** 2
        u_prev, u, u_next = u, u_next, u_prev
    return acc / f32(len(wave))


def import_wavetorch():
    """Import wavetorch 0.2.1 on a current stack, or return ``(None, why)``.

    Two shims, applied before the import: ``skimage.draw.circle`` was removed from
    scikit-image (0.19); it is mapped to ``skimage.draw.disk`` (``circle(r, c, radius)`` ->
    ``disk((r, c), radius)``). The wheel lacks the ``wavetorch.data`` subpackage that its
    ``__init__`` imports (only used to load the vowel recordings); an empty module stands in.
    """
    import importlib.util
    import types

    if importlib.util.find_spec("torch") is None:
        return None, "torch is not installed (pip install '.[bench]', see benchmarks/README.md)"
    if importlib.util.find_spec("wavetorch") is None:
        return None, "wavetorch is not installed (pip install --no-deps wavetorch==0.2.1)"
    try:
        import skimage.draw

        if not hasattr(skimage.draw, "circle"):
            skimage.draw.circle = lambda r, c, radius, shape=None: skimage.draw.disk(
                (r, c), radius, shape=shape)
    except ImportError:
        return None, "scikit-image is not installed (wavetorch imports skimage.draw)"
    if "wavetorch.data" not in sys.modules:
        stub = types.ModuleType("wavetorch.data")
        stub.__doc__ = "stand-in: the wavetorch 0.2.1 wheel lacks this subpackage"
        sys.modules["wavetorch.data"] = stub
    try:
        import torch
        import wavetorch
    except Exception as e:  # noqa: BLE001 - report any import failure and go on
        return None, f"wavetorch import failed: {type(e).__name__}: {e}"
    return (torch, wavetorch), f"torch {torch.__version__}, wavetorch {wavetorch.__version__}"


def wavetorch_model(wt, layer):
    """A wavetorch WaveRNN with the pnn layer's grid, spacing, time step, background speed and
    a nonlinear speed in the whole grid; one point source, ``n_out`` intensity probes."""
    torch, wavetorch = wt
    geom = wavetorch.WaveGeometryFreeForm((layer.nx, layer.ny), layer.dx, c0=float(layer.c0),
                                          c1=float(layer.c0) * 1.15, abs_N=6, rho="half")
    cell = wavetorch.WaveCell(layer.dt, geom, c_nl=float(layer.c_nl))
    src = wavetorch.WaveSource(layer.src_xy[0][0], layer.src_xy[0][1])
    probes = [wavetorch.WaveIntensityProbe(px, py) for px, py in layer.probe_xy]
    return wavetorch.WaveRNN(cell, src, probes)


def torch_device(torch) -> str:
    """The device wavetorch runs on: CUDA when JAX runs on a GPU and PyTorch sees one (the
    peer then runs on the same accelerator as pnn), else the CPU."""
    if jax.default_backend() == "gpu" and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def bench_fdtd_size(args, nx: int, batch: int, wt, numpy_peer: bool) -> dict:
    """pnn, NumPy (optional) and wavetorch (when importable) on one grid and batch."""
    from pnn.sim.acoustic import AcousticLayer

    ny, steps = nx, args.fdtd_steps
    layer = AcousticLayer(8, 8, nx=nx, ny=ny, n_steps=steps)
    x = np.random.default_rng(0).uniform(0, 1, (batch, 8)).astype(np.float32)
    cells = batch * nx * ny * steps
    out = {"grid": [nx, ny], "steps": steps, "batch": batch, "dtype": "float32",
           "cell_updates_per_run": cells, "impl": {}}

    xj = jax.device_put(jnp.asarray(x))
    t = time.perf_counter()
    np.asarray(layer._forward(xj))
    compile_s = time.perf_counter() - t

    def run_pnn():
        layer._forward(xj).block_until_ready()

    if numpy_peer:
        # correctness of the NumPy peer: a small grid where the waves reach the probes
        small = AcousticLayer(8, 8, nx=48, ny=48, n_steps=400)
        xs = x[:4]
        ref = np.asarray(small._forward(jnp.asarray(xs)))
        rel = float(np.max(np.abs(numpy_fdtd(small, xs) - ref)) / np.max(np.abs(ref)))
        numpy_fdtd(layer, x)
        # interleaved rounds (pnn, then NumPy, again and again), so that a shared machine's
        # slow and fast moments fall on both; the minimum of each is reported
        t_pnn, t_np = [], []
        per = max(1, args.repeats_pnn // (args.repeats_peer + 1))
        for _ in range(args.repeats_peer + 1):
            t_pnn += best_time(run_pnn, per)[1]
            t_np += best_time(lambda: numpy_fdtd(layer, x), 1)[1]
        out["impl"]["numpy"] = {"best_s": min(t_np), "times_s": t_np,
                                "cell_updates_per_s": cells / min(t_np), "device": "cpu",
                                "max_rel_diff_vs_pnn_48x48_400_steps": rel,
                                "timing": "interleaved with pnn's"}
    else:
        t_pnn = best_time(run_pnn, args.repeats_pnn)[1]
    best = min(t_pnn)
    out["impl"] = {"pnn": {"best_s": best, "times_s": t_pnn, "first_call_s": compile_s,
                           "cell_updates_per_s": cells / best, "device": jax.default_backend()},
                   **out["impl"]}
    log(f"fdtd {nx}x{ny} batch {batch} pnn: {best:.3f} s "
        f"({cells / best / 1e9:.2f} G cell-updates/s)")
    if numpy_peer:
        log(f"fdtd numpy: {out['impl']['numpy']['best_s']:.3f} s (max rel diff vs pnn "
            f"{rel:.2e})")
    else:
        out["numpy_skipped"] = (f"{cells:.2g} cell-updates a run is over --numpy-max-cells "
                                f"{args.numpy_max_cells:.2g}")

    if wt is not None:
        try:
            bench_wavetorch(args, out, wt, layer, x, steps, batch, cells)
        except Exception as e:  # noqa: BLE001 - the peer failing must not lose pnn's numbers
            out["wavetorch_error"] = f"{type(e).__name__}: {e}"
            log(f"fdtd wavetorch failed: {out['wavetorch_error']}")
    p = out["impl"]["pnn"]["best_s"]
    out["ratios"] = {f"{k}_over_pnn": v["best_s"] / p for k, v in out["impl"].items()
                     if k != "pnn"}
    return out


def bench_wavetorch(args, out, wt, layer, x, steps, batch, cells) -> None:
    """wavetorch on the same grid, steps, batch and dtype: adds ``out["impl"]["wavetorch"]``."""
    torch = wt[0]
    dev = torch_device(torch)
    model = wavetorch_model(wt, layer).to(dev)
    drive = torch.tensor(np.outer(x[:, 0], np.asarray(layer.waveform)) * 1e3,
                         dtype=torch.float32, device=dev)  # (batch, steps): one source each

    def run_wt(d=drive):
        # torch.device(...) as the default device: wavetorch's source injection allocates
        # with a bare torch.zeros(...), which would otherwise land on the CPU
        with torch.no_grad(), torch.device(dev):
            y = model(d)
        if dev == "cuda":
            torch.cuda.synchronize()
        return y

    if dev == "cpu":
        # PyTorch's OpenMP threads degrade badly on a shared, oversubscribed machine: pick
        # the faster thread count (1 or all cores) on a 30-step probe, in wavetorch's favour
        probe = {}
        for th in sorted({1, os.cpu_count() or 1}):
            torch.set_num_threads(th)
            run_wt(drive[:, :30])
            probe[th], _ = best_time(lambda: run_wt(drive[:, :30]), 2)
        torch.set_num_threads(min(probe, key=probe.get))
        out["wavetorch_thread_probe_s_per_30_steps"] = probe
    y_wt = run_wt()
    assert tuple(y_wt.shape[:2]) == (batch, steps), y_wt.shape
    best, times = best_time(run_wt, args.repeats_peer)
    out["impl"]["wavetorch"] = {"best_s": best, "times_s": times,
                                "cell_updates_per_s": cells / best, "device": dev,
                                "torch_threads": torch.get_num_threads()}
    log(f"fdtd wavetorch ({dev}): {best:.3f} s")


def bench_fdtd(args) -> dict:
    """The first of ``--fdtd-sizes`` at the top level (the reference size), any others in
    ``sizes``."""
    wt, why = import_wavetorch()
    if wt is None:
        log(f"fdtd wavetorch skipped: {why}")
    runs = []
    for nx, batch in args.fdtd_sizes:
        cells = batch * nx * nx * args.fdtd_steps
        runs.append(bench_fdtd_size(args, nx, batch, wt, cells <= args.numpy_max_cells))
    out = dict(runs[0])
    out["wavetorch_status"] = why
    out["sizes"] = runs[1:]
    return out


# --------------------------------------------------------------------------------- roofline
def _cpu_bandwidth_and_peak(args, field_bytes: int) -> dict:
    rng = np.random.default_rng(0)

    def copy_bw(n_bytes, repeats):
        a = rng.random(n_bytes // 8)
        b = np.empty_like(a)
        inner = max(1, int(2e8 // n_bytes))  # ~200 MB moved per timing
        best, _ = best_time(lambda: [np.copyto(b, a) for _ in range(inner)], repeats)
        return 2 * a.nbytes * inner / best  # read + write

    dram_bw = copy_bw(512 * 2**20, 5)
    ws_bw = copy_bw(field_bytes, 7)
    n = 2048 if not args.quick else 1024
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    a @ b
    best_np, _ = best_time(lambda: a @ b, 5)
    aj, bj = jnp.asarray(a), jnp.asarray(b)
    mm = jax.jit(jnp.matmul)
    mm(aj, bj).block_until_ready()
    best_jax, _ = best_time(lambda: mm(aj, bj).block_until_ready(), 5)
    return {"bandwidth_dram_B_per_s": dram_bw,
            "bandwidth_dram_method": "np.copyto of a 512 MiB float64 array, best of 5, "
                                     "bytes = read + write",
            "bandwidth_working_set_B_per_s": ws_bw,
            "bandwidth_working_set_method": "np.copyto of one field's size "
                                            f"({field_bytes / 2**20:.1f} MiB) repeated, best of 7",
            "peak_flops": 2 * n**3 / min(best_np, best_jax),
            "peak_method": f"float32 {n}x{n} matmul, the faster of NumPy (BLAS) and jax.jit "
                           "(XLA), 2n^3 FLOPs, best of 5",
            "peak_flops_numpy": 2 * n**3 / best_np, "peak_flops_jax": 2 * n**3 / best_jax}


def _accelerator_bandwidth_and_peak(args, field_bytes: int) -> dict:
    """On a GPU: device-memory bandwidth from a jitted ``a + 1`` on device arrays (one read,
    one write), and float32 peak from a full-precision (``Precision.HIGHEST``, no TF32) jitted
    matmul, each timed after ``block_until_ready``."""
    add = jax.jit(lambda a: a + 1.0)

    def bw(n_bytes, repeats):
        a = jax.device_put(jnp.ones(n_bytes // 4, jnp.float32))
        add(a).block_until_ready()
        inner = max(1, int(2e10 // n_bytes))  # ~20 GB moved per timing

        def run():
            y = a
            for _ in range(inner):
                y = add(y)
            y.block_until_ready()

        best, _ = best_time(run, repeats)
        return 2 * n_bytes * inner / best

    dram_bw = bw(2 * 2**30, 5)
    ws_bw = bw(field_bytes, 7)
    n = 8192
    key = jax.random.PRNGKey(0)
    a = jax.random.uniform(key, (n, n), jnp.float32)
    b = jax.random.uniform(jax.random.split(key)[0], (n, n), jnp.float32)
    mm = jax.jit(lambda a, b: jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST))
    mm(a, b).block_until_ready()
    best, _ = best_time(lambda: mm(a, b).block_until_ready(), 5)
    dev = jax.devices()[0]
    return {"bandwidth_dram_B_per_s": dram_bw,
            "bandwidth_dram_method": f"jitted a + 1 on a 2 GiB float32 array in "
                                     f"{dev.device_kind} memory, best of 5, bytes = read + write",
            "bandwidth_working_set_B_per_s": ws_bw,
            "bandwidth_working_set_method": "the same on one field's size "
                                            f"({field_bytes / 2**20:.1f} MiB), best of 7",
            "peak_flops": 2 * n**3 / best,
            "peak_method": f"float32 {n}x{n} jitted matmul at Precision.HIGHEST (no TF32) on "
                           f"{dev.device_kind}, 2n^3 FLOPs, best of 5"}


def bench_roofline(args, fdtd: dict | None) -> dict:
    from pnn.sim.acoustic import AcousticLayer

    nx, batch = args.fdtd_sizes[0]
    ny = nx
    field_bytes = nx * ny * batch * 4
    if jax.default_backend() == "cpu":
        out = _cpu_bandwidth_and_peak(args, field_bytes)
    else:
        out = _accelerator_bandwidth_and_peak(args, field_bytes)
    dram_bw, ws_bw, peak = (out["bandwidth_dram_B_per_s"], out["bandwidth_working_set_B_per_s"],
                            out["peak_flops"])
    layer = AcousticLayer(8, 8, nx=nx, ny=ny, n_steps=args.fdtd_steps)
    flops_cell = (layer.flops_per_sample - 2 * 8 * layer.n_steps - 8) / (nx * ny * layer.n_steps)
    # compulsory traffic per cell-update with perfect reuse inside a step: read u, u_prev and
    # the source field (src * w is a full field), write u_next; the static fields (delta, mask,
    # sigma) are shared by the batch (read once per cell per step, / batch)
    bytes_cell = 4 * 4 + 3 * 4 / batch
    ai = flops_cell / bytes_cell
    out.update({"working_set_bytes": 4 * field_bytes,
                "stencil_flops_per_cell_update": flops_cell,
                "stencil_bytes_per_cell_update": bytes_cell,
                "arithmetic_intensity": ai, "grid": [nx, ny], "batch": batch})
    for tag, bw in (("dram", dram_bw), ("working_set", ws_bw)):
        flops = min(peak, ai * bw)
        out[f"attainable_cell_updates_per_s_{tag}"] = flops / flops_cell
        out[f"bound_{tag}"] = "memory" if ai * bw < peak else "compute"
    if fdtd and "pnn" in fdtd.get("impl", {}):
        rate = fdtd["impl"]["pnn"]["cell_updates_per_s"]
        out["pnn_cell_updates_per_s"] = rate
        out["pnn_gflops"] = rate * flops_cell / 1e9
        for tag in ("dram", "working_set"):
            out[f"pnn_fraction_of_roofline_{tag}"] = rate / out[
                f"attainable_cell_updates_per_s_{tag}"]
        # the other sizes against the DRAM roofline (their compulsory bytes per cell-update
        # depend on the batch, which shares the static fields)
        out["other_sizes"] = []
        for f in fdtd.get("sizes", ()):
            b_cell = 4 * 4 + 3 * 4 / f["batch"]
            att = min(peak, flops_cell / b_cell * dram_bw) / flops_cell
            r = f["impl"]["pnn"]["cell_updates_per_s"]
            out["other_sizes"].append({"grid": f["grid"], "batch": f["batch"],
                                       "pnn_cell_updates_per_s": r,
                                       "attainable_cell_updates_per_s_dram": att,
                                       "pnn_fraction_of_roofline_dram": r / att})
    return out


# --------------------------------------------------------------------------------- batch
def bench_batch(args) -> dict:
    sys.path.insert(0, HERE)
    from sim_throughput import measure

    from pnn.registry import make_system

    batches = args.batches or ([1, 16, 256] if args.quick else [1, 2, 4, 8, 16, 32, 64, 128,
                                                                 256])
    rows = []
    for system in SIMULATORS:
        layer = make_system(system, 14, 20, seed=0)
        for b in batches:
            r = measure(layer, b, repeats=2, min_time=0.15 if args.quick else 0.3)
            rows.append({"system": system, **r})
            log(f"batch {system} {b}: {r['samples_per_s_best']:.0f} samples/s")
    return {"n_in": 14, "n_out": 20, "results": rows,
            "method": "public __call__ (validated), warm, best of 2 rounds of >= 0.3 s"}


# --------------------------------------------------------------------------------- training
TRAIN_METHODS = ("phyll", "pat", "insilico", "zo")


def bench_training(args) -> dict:
    from pnn.cost import Ledger
    from pnn.registry import build_layers, get_trainer, load_task
    from pnn.stats import cost_to_target

    data = load_task("vowels", seed=0)
    epochs = 2 if args.quick else 5
    systems = ["acoustic"] if args.quick else list(SIMULATORS)
    runs, vs = [], []
    for system in systems:
        recs = []
        for method in TRAIN_METHODS:
            tr = get_trainer(method)
            cfg = tr.Config(epochs=epochs, eval_train_max=0)
            layers = build_layers(system, method, cfg, data, seed=0)
            t = time.perf_counter()
            rec, _ = tr.train(layers, data, cfg, seed=0, ledger=Ledger())
            total = time.perf_counter() - t
            h = rec["history"]
            last = h[-1]
            n_samples = rec["steps"] * cfg.batch_size
            row = {"system": system, "method": method, "epochs": epochs,
                   "val_accuracy": rec.get("val_accuracy"),
                   "best_val_accuracy": max(r.get("val_accuracy", 0) for r in h),
                   "test_accuracy": rec.get("test_accuracy"),
                   "train_queries": last["train_queries"], "digital_flops": last["digital_flops"],
                   "learning_wall_s": last["wall_s"], "eval_s": last["eval_s"],
                   "eval_queries": last["eval_queries"],
                   "physical_s": rec["cost"]["physical_s"], "digital_s": rec["cost"]["digital_s"],
                   "total_s": total,
                   "train_samples_per_s": n_samples / max(last["wall_s"], 1e-9),
                   "history": h}
            recs.append(row)
            log(f"training {system} {method}: {last['wall_s']:.1f} s learning, "
                f"val {row['best_val_accuracy']:.3f}")
        target = 0.95 * max(r["best_val_accuracy"] for r in recs)
        for r in recs:
            r["target_val_accuracy"] = target
            r["cost_to_target"] = cost_to_target(r["history"], target)
        # issue 12's target: PhyLL reaching PAT's validation accuracy with fewer digital FLOPs
        # and less learning wall time (evaluation excluded)
        ph, pat = (next(r for r in recs if r["method"] == m) for m in ("phyll", "pat"))
        t_pat = pat["best_val_accuracy"]
        c_ph, c_pat = cost_to_target(ph["history"], t_pat), cost_to_target(pat["history"], t_pat)
        vs.append({"system": system, "pat_best_val_accuracy": t_pat, "phyll": c_ph, "pat": c_pat,
                   "phyll_fewer_flops": bool(c_ph and c_pat and c_ph["digital_flops"]
                                             < c_pat["digital_flops"]),
                   "phyll_less_wall": bool(c_ph and c_pat and c_ph["wall_s"] < c_pat["wall_s"])})
        runs.extend(recs)
    return {"task": "vowels", "seed": 0, "epochs": epochs,
            "target": "95 % of the best method's best validation accuracy on that system",
            "runs": runs, "phyll_vs_pat": vs,
            "note": "default configs, not tuned: PAT's accuracy here is PAT's after "
                    f"{epochs} epochs with its default config, not its tuned accuracy"}


# --------------------------------------------------------------------------------- tuned
PROTOCOL = os.path.join(os.path.dirname(HERE), "experiments", "results",
                        "protocol_{system}_vowels", "results.json")


def bench_tuned(args) -> dict:
    """PhyLL against PAT's *tuned* validation accuracy, from the comparison protocol's records
    (``pnn run experiments/protocol_<system>_vowels.toml``: every method tuned with the same
    Optuna budget on seed 0's validation split, then 5 seeds). Per seed: the target is PAT's
    best validation accuracy over its epochs; each method's learning costs (train queries,
    digital FLOPs, wall time; evaluation excluded) at the first epoch reaching it. Nothing is
    trained here: the records' per-epoch cumulative costs are read back."""
    from pnn.stats import cost_to_target

    rows, per_system = [], []
    for system in SIMULATORS:
        path = PROTOCOL.format(system=system)
        if not os.path.exists(path):
            log(f"tuned: no protocol record for {system} ({path}); skipped")
            continue
        with open(path) as fh:
            recs = json.load(fh)
        by = {(r["method"], r["seed"]): r for r in recs}
        seeds = sorted(s for (m, s) in by if m == "pat" and ("phyll", s) in by)
        for seed in seeds:
            pat, ph = by[("pat", seed)], by[("phyll", seed)]
            target = max(h["val_accuracy"] for h in pat["history"] if "val_accuracy" in h)
            c_pat, c_ph = cost_to_target(pat["history"], target), cost_to_target(
                ph["history"], target)
            rows.append({"system": system, "seed": seed, "pat_best_val_accuracy": target,
                         "phyll_best_val_accuracy": max(h["val_accuracy"] for h in ph["history"]
                                                        if "val_accuracy" in h),
                         "pat": c_pat, "phyll": c_ph,
                         "phyll_fewer_flops": bool(c_ph and c_ph["digital_flops"]
                                                   < c_pat["digital_flops"]),
                         "phyll_less_wall": bool(c_ph and c_ph["wall_s"] < c_pat["wall_s"])})
        mine = [r for r in rows if r["system"] == system]
        reached = [r for r in mine if r["phyll"] is not None]

        def med(key, who):
            v = [r[who][key] for r in reached]
            return float(np.median(v)) if v else None

        per_system.append({
            "system": system, "seeds": len(mine), "phyll_reached": len(reached),
            "phyll_fewer_flops_and_less_wall": sum(r["phyll_fewer_flops"] and r["phyll_less_wall"]
                                                   for r in mine),
            "median_pat_target": float(np.median([r["pat_best_val_accuracy"] for r in mine])),
            **{f"median_{who}_{key}": med(key, who) for who in ("phyll", "pat")
               for key in ("wall_s", "digital_flops", "train_queries", "epoch")},
            "record": os.path.relpath(path, os.path.dirname(HERE)),
            "pnn_version": recs[0].get("pnn_version")})
        log(f"tuned {system}: PhyLL reached PAT's tuned validation accuracy on "
            f"{len(reached)}/{len(mine)} seeds")
    return {"rows": rows, "systems": per_system,
            "method": "per seed, target = PAT's best validation accuracy (tuned config); "
                      "learning costs at the first epoch reaching it, read from the protocol "
                      "records (evaluation excluded); medians over the seeds PhyLL reached it"}


# --------------------------------------------------------------------------------- memory
_MEM_CHILD = r"""
import json, resource, sys, time
import numpy as np, jax, jax.numpy as jnp
from pnn.cost import Ledger
from pnn.registry import get_trainer, load_task, make_system
method, n_steps, remat = sys.argv[1], int(sys.argv[2]), sys.argv[3]
kw = {"n_steps": n_steps}
if remat != "auto":
    kw["remat_every"] = int(remat)
import dataclasses
data = load_task("vowels", seed=0)
data = dataclasses.replace(data, x_train=data.x_train[:64], y_train=data.y_train[:64])
tr = get_trainer(method)
cfg = tr.Config(epochs=1, batch_size=32)
layers = [make_system("acoustic", n_in, n_out, seed=k, name=f"acoustic[{k}]", **kw)
          for k, (n_in, n_out) in enumerate(tr.shapes(cfg, data.n_features, data.n_classes))]
algo = tr.Algorithm(layers, data.sealed(), cfg, seed=0, ledger=Ledger())
state = algo.init()
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
def rss():
    # VmHWM (this process's peak RSS); getrusage's ru_maxrss would include the parent's peak,
    # which a forked child inherits
    return status("VmHWM")
x, y = data.x_train[:32], data.y_train[:32]
setup_peak = rss()
def reset():
    with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM to the current RSS
        fh.write("5")
    return status("VmRSS")
def sync(st):
    jax.block_until_ready([v for v in jax.tree_util.tree_leaves(st) if isinstance(v, jax.Array)])
before_first = reset()
t = time.perf_counter()
state, _ = algo.step(state, x, y)
sync(state)
first = time.perf_counter() - t
first_peak = rss()
before = reset()
t = time.perf_counter()
state, _ = algo.step(state, x, y)
sync(state)
second = time.perf_counter() - t
out = {"method": method, "n_steps": n_steps, "remat_every": layers[0].remat_every,
       "peak_rss_mb": rss(), "rss_before_step_mb": before, "setup_peak_rss_mb": setup_peak,
       "first_step_peak_rss_mb": first_peak, "rss_before_first_step_mb": before_first,
       "first_step_s": first, "step_s": second}
if method == "insilico":
    layer = layers[0]
    xd = jnp.full((32, layer.spec.n_in), 0.3, jnp.float32)
    g = jax.jit(jax.grad(lambda v: layer.forward(v).sum()))
    out["xla_grad_temp_mb"] = g.lower(xd).compile().memory_analysis().temp_size_in_bytes / 2**20
print("RESULT " + json.dumps(out))
"""


def bench_memory(args) -> dict:
    steps_list = [500, 4000] if args.quick else [500, 1000, 2000, 4000]
    cases = [("phyll", "auto"), ("insilico", "auto"), ("insilico", "0")]
    rows = []
    for method, remat in cases:
        for n in steps_list:
            p = subprocess.run([sys.executable, "-c", _MEM_CHILD, method, str(n), remat],
                               capture_output=True, text=True, timeout=600)
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
            if p.returncode != 0 or not line:
                rows.append({"method": method, "n_steps": n, "remat": remat,
                             "error": p.stderr[-2000:]})
                log(f"memory {method} {n} remat={remat}: FAILED")
                continue
            r = json.loads(line[0][7:])
            r["step_peak_above_before_mb"] = r["peak_rss_mb"] - r["rss_before_step_mb"]
            rows.append(r)
            log(f"memory {method} steps={n} remat={r['remat_every']}: peak {r['peak_rss_mb']:.0f}"
                f" MB (+{r['step_peak_above_before_mb']:.0f} MB in the step)")
    summary = {}
    for method, remat in cases:
        sel = [r for r in rows if r["method"] == method and r.get("remat") is None
               and ("error" not in r) and (str(r["remat_every"]) == "0") == (remat == "0")]
        if len(sel) >= 2:
            lo, hi = sel[0], sel[-1]
            key = f"{method}{'_plain_scan' if remat == '0' else ''}"
            summary[key] = {
                "peak_rss_change_pct": 100 * (hi["peak_rss_mb"] / lo["peak_rss_mb"] - 1),
                "step_peak_above_before_ratio": (hi["step_peak_above_before_mb"]
                                                 / max(lo["step_peak_above_before_mb"], 1e-9)),
                "steps_ratio": hi["n_steps"] / lo["n_steps"]}
            if "xla_grad_temp_mb" in hi:
                summary[key]["xla_grad_temp_ratio"] = hi["xla_grad_temp_mb"] / lo[
                    "xla_grad_temp_mb"]
    return {"grid": "registry default (acoustic: 32 x 36 cells)", "batch": 32,
            "method": "one subprocess per row; after setup (imports, layers, init on 64 "
                      "training samples) and a first step (compilation; its peak is "
                      "first_step_peak_rss_mb) the peak RSS is reset (/proc/self/clear_refs 5) "
                      "and read back (VmHWM) after a second, warm step: peak_rss_mb; "
                      "rss_before_step_mb is the RSS at the reset; "
                      "xla_grad_temp_mb: XLA's compiled temporary buffers for the gradient of "
                      "one block's simulator",
            "rows": rows, "summary": summary}


# --------------------------------------------------------------------------------- scaling
def _fit_exponent(xs, ys) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def bench_scaling(args) -> dict:
    import dataclasses

    from pnn.cost import Ledger
    from pnn.registry import get_trainer, load_task, make_system

    data = load_task("vowels", seed=0)
    tr = get_trainer("phyll")
    cfg = tr.Config(epochs=1)
    shapes = tr.shapes(cfg, data.n_features, data.n_classes)

    def epoch_time(n_train, nx, ny):
        idx = np.random.default_rng(0).permutation(len(data.y_train))[:n_train]
        d = dataclasses.replace(data, x_train=data.x_train[idx], y_train=data.y_train[idx])
        layers = [make_system("acoustic", a, b, seed=k, name=f"acoustic[{k}]", nx=nx, ny=ny)
                  for k, (a, b) in enumerate(shapes)]
        algo = tr.Algorithm(layers, d.sealed(), cfg, seed=0, ledger=Ledger())
        state = algo.init()
        bs = cfg.batch_size
        batches = [(d.x_train[i:i + bs], d.y_train[i:i + bs]) for i in range(0, n_train, bs)]
        state, _ = algo.step(state, *batches[0])  # compile (full batch shape)
        if len(batches[-1][1]) != bs:
            state, _ = algo.step(state, *batches[-1])  # compile the last, short batch
        t = time.perf_counter()
        for xb, yb in batches:
            state, _ = algo.step(state, xb, yb)
        return time.perf_counter() - t

    sizes = [128, 512] if args.quick else [128, 256, 512, 840]
    grids = [(32, 36), (64, 72)] if args.quick else [(32, 36), (48, 54), (64, 72), (96, 108)]
    by_size = []
    for n in sizes:
        s = epoch_time(n, 32, 36)
        by_size.append({"n_train": n, "epoch_s": s})
        log(f"scaling n_train={n}: {s:.2f} s/epoch")
    by_grid = []
    n_grid = 256
    for nx, ny in grids:
        s = epoch_time(n_grid, nx, ny)
        by_grid.append({"nx": nx, "ny": ny, "area": nx * ny, "epoch_s": s})
        log(f"scaling grid {nx}x{ny}: {s:.2f} s/epoch")
    return {"method": "phyll", "system": "acoustic", "batch_size": cfg.batch_size,
            "what": "training steps of one epoch (no evaluation), warm (compiled first)",
            "by_dataset_size": by_size, "dataset_size_exponent": _fit_exponent(
                [r["n_train"] for r in by_size], [r["epoch_s"] for r in by_size]),
            "by_grid_area": by_grid, "grid_n_train": n_grid,
            "grid_area_exponent": _fit_exponent([r["area"] for r in by_grid],
                                                [r["epoch_s"] for r in by_grid])}


# --------------------------------------------------------------------------------- summary
def _f(v, fmt=".3g"):
    return "n/a" if v is None else format(v, fmt)


def summary_md(res: dict, args, wall: float) -> str:
    m = res.get("machine", {})
    cmds = getattr(args, "commands", None) or [" ".join(["python benchmarks/run_all.py",
                                                          *args.argv])]
    cmd = "` and `".join(cmds)
    accel = m.get("device_kind") if m.get("backend") not in (None, "cpu") else None
    lines = ["# pnn benchmarks" + (f" ({accel})" if accel else ""), "",
             f"Command{'s' if len(cmds) > 1 else ''}: `{cmd}` ({wall / 60:.1f} min). Machine: "
             + (f"{accel} ({m.get('backend')}), " if accel else "")
             + f"{m.get('cpu_count')} CPU cores "
             f"({m.get('processor') or m.get('machine')}), load average at start "
             f"{_f((m.get('load_average_at_start') or [None])[0], '.2f')}, jax "
             f"{m.get('jax')} ({m.get('backend')}), Python {m.get('python')}. "
             "Minimum of repeats reported.", ""]
    f = res.get("fdtd")
    if f:
        for size in [f, *f.get("sizes", ())]:
            lines += [f"## Acoustic FDTD ({size['grid'][0]} x {size['grid'][1]} grid, "
                      f"{size['steps']} steps, batch {size['batch']}, {size['dtype']})", "",
                      "| implementation | device | best s | cell-updates/s | time / pnn |",
                      "| --- | --- | ---: | ---: | ---: |"]
            p = size["impl"]["pnn"]["best_s"]
            for k, v in size["impl"].items():
                lines.append(f"| {k} | {v.get('device', 'cpu')} | {v['best_s']:.3f} | "
                             f"{v['cell_updates_per_s']:.3g} | {v['best_s'] / p:.1f}x |")
            if "numpy_skipped" in size:
                lines.append(f"\nNumPy not run at this size: {size['numpy_skipped']}.")
            lines.append("")
        np_ref = f["impl"].get("numpy", {}).get("max_rel_diff_vs_pnn_48x48_400_steps")
        lines += [f"wavetorch: {f['wavetorch_status']}. NumPy: the same update written in "
                  "this benchmark (`numpy_fdtd`), on the CPU"
                  + ("" if np_ref is None else
                     f"; its probe intensities differ from pnn's by at most {np_ref:.1e} "
                     "(relative, checked on a 48 x 48 grid, 400 steps, where the waves reach "
                     "the probes)")
                  + ". wavetorch runs its own equivalent scheme (one point source, "
                  "intensity-dependent speed, absorbing layer) on the same grid, steps, batch "
                  "and dtype, under `torch.no_grad()`, on the device in the table.", "",
                  "Peer install (the `[bench]` extra): `pip install torch==2.13.0 --index-url "
                  "https://download.pytorch.org/whl/cpu` (CPU wheel), then `pip install "
                  "scikit-image seaborn pandas` and `pip install --no-deps wavetorch==0.2.1`. "
                  "Shims applied at import (`import_wavetorch`): `skimage.draw.circle` -> "
                  "`skimage.draw.disk`; an empty `wavetorch.data` module (missing from the "
                  "wheel). On a GPU, PyTorch's own CUDA build is used and wavetorch runs with "
                  "`torch.device('cuda')` as the default device (its source injection "
                  "allocates with a bare `torch.zeros`).", ""]
    r = res.get("roofline")
    if r:
        on_accel = m.get("backend") not in (None, "cpu")
        lines += ["## Roofline (stencil)", "",
                  f"- Peak FLOP/s: {r['peak_flops'] / 1e9:.1f} GFLOP/s ({r['peak_method']}).",
                  *([f"- Bandwidth: device memory {r['bandwidth_dram_B_per_s'] / 1e9:.0f} GB/s "
                     f"({r['bandwidth_dram_method']})."] if on_accel else
                    [f"- Bandwidth: DRAM {r['bandwidth_dram_B_per_s'] / 1e9:.1f} GB/s "
                     f"({r['bandwidth_dram_method']}); at the working-set size "
                     f"{r['bandwidth_working_set_B_per_s'] / 1e9:.1f} GB/s "
                     f"({r['bandwidth_working_set_method']}; the four fields are "
                     f"{r['working_set_bytes'] / 2**20:.0f} MiB)."]),
                  f"- Stencil: {r['stencil_flops_per_cell_update']:.0f} FLOPs and "
                  f"{r['stencil_bytes_per_cell_update']:.2f} compulsory bytes per cell-update "
                  "(read u, u_prev, the source field; write u_next; the static fields shared "
                  f"across the batch): arithmetic intensity {r['arithmetic_intensity']:.2f} "
                  "FLOP/B, memory-bound.",
                  f"- Attainable: {r['attainable_cell_updates_per_s_dram']:.3g} cell-updates/s "
                  + ("at device-memory bandwidth." if on_accel else
                     f"at DRAM bandwidth, {r['attainable_cell_updates_per_s_working_set']:.3g} "
                     "at working-set bandwidth.")]
        if "pnn_cell_updates_per_s" in r:
            g = r.get("grid", [None])[0]
            where = f" at {g} x {g}, batch {r['batch']}" if g else ""
            if on_accel:
                lines += [f"- pnn{where}: {r['pnn_cell_updates_per_s']:.3g} cell-updates/s "
                          f"({r['pnn_gflops']:.1f} GFLOP/s) = "
                          f"{100 * r['pnn_fraction_of_roofline_dram']:.0f} % of the "
                          "device-memory roofline (a field this small sits in the L2 cache; "
                          "the time per simulated step is the loop's per-iteration cost)."]
            else:
                lines += [f"- pnn{where}: {r['pnn_cell_updates_per_s']:.3g} cell-updates/s "
                          f"({r['pnn_gflops']:.1f} GFLOP/s) = "
                          f"{100 * r['pnn_fraction_of_roofline_dram']:.0f} % of the DRAM "
                          "roofline, "
                          f"{100 * r['pnn_fraction_of_roofline_working_set']:.0f} % of the "
                          "working-set roofline."]
            for o in r.get("other_sizes", ()):
                lines.append(f"- pnn at {o['grid'][0]} x {o['grid'][1]}, batch {o['batch']}: "
                             f"{o['pnn_cell_updates_per_s']:.3g} cell-updates/s = "
                             f"{100 * o['pnn_fraction_of_roofline_dram']:.0f} % of the "
                             f"{'device-memory' if on_accel else 'DRAM'} roofline.")
        lines.append("")
    b = res.get("batch")
    if b:
        systems = list(dict.fromkeys(x["system"] for x in b["results"]))
        batches = list(dict.fromkeys(x["batch"] for x in b["results"]))
        lines += ["## Simulator throughput against batch (samples/s, best round)", "",
                  "| system | " + " | ".join(str(x) for x in batches) + " |",
                  "| --- | " + " | ".join("---:" for _ in batches) + " |"]
        for s in systems:
            vals = {x["batch"]: x["samples_per_s_best"] for x in b["results"]
                    if x["system"] == s}
            lines.append(f"| {s} | " + " | ".join(f"{vals[x]:.0f}" for x in batches) + " |")
        lines += ["", f"({b['method']}; n_in={b['n_in']}, n_out={b['n_out']}.)", ""]
    t = res.get("training")
    if t:
        lines += [f"## Training throughput and cost ({t['task']}, seed {t['seed']}, "
                  f"{t['epochs']} epochs; learning costs, evaluation apart)", "",
                  "| system | method | best val acc | learning wall s | physical s | "
                  "digital s | train samples/s | train queries | digital GFLOP | "
                  "to target: wall s | to target: GFLOP |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for x in t["runs"]:
            c = x["cost_to_target"]
            lines.append(
                f"| {x['system']} | {x['method']} | {x['best_val_accuracy']:.3f} | "
                f"{x['learning_wall_s']:.1f} | {x['physical_s']:.1f} | {x['digital_s']:.1f} | "
                f"{x['train_samples_per_s']:.0f} | {x['train_queries']} | "
                f"{x['digital_flops'] / 1e9:.2f} | "
                f"{'not reached' if c is None else format(c['wall_s'], '.1f')} | "
                f"{'' if c is None else format(c['digital_flops'] / 1e9, '.2f')} |")
        lines += ["", f"Target: {t['target']}. physical s / digital s are the ledger's split "
                  "of the whole run (evaluation included).", "",
                  "PhyLL against PAT's best validation accuracy (learning costs to reach it; "
                  f"{t['note']}):", "",
                  "| system | PAT best val | PhyLL wall s | PAT wall s | PhyLL GFLOP | "
                  "PAT GFLOP |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for v in t["phyll_vs_pat"]:
            a, b = v["phyll"], v["pat"]
            lines.append(f"| {v['system']} | {v['pat_best_val_accuracy']:.3f} | "
                         f"{'not reached' if a is None else format(a['wall_s'], '.1f')} | "
                         f"{'not reached' if b is None else format(b['wall_s'], '.1f')} | "
                         f"{'' if a is None else format(a['digital_flops'] / 1e9, '.2f')} | "
                         f"{'' if b is None else format(b['digital_flops'] / 1e9, '.2f')} |")
        lines.append("")
    tu = res.get("tuned")
    if tu:
        lines += ["## PhyLL against PAT's tuned validation accuracy (comparison protocol, "
                  "vowels)", "",
                  "| system | seeds PhyLL reached it | PhyLL fewer FLOPs and less wall | "
                  "PAT target (median) | PhyLL wall s | PAT wall s | PhyLL GFLOP | PAT GFLOP | "
                  "PhyLL train queries | PAT train queries |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for v in tu["systems"]:
            def g(key, scale=1.0, fmt=".1f"):
                x = v[key]
                return "–" if x is None else format(x / scale, fmt)
            lines.append(f"| {v['system']} | {v['phyll_reached']}/{v['seeds']} | "
                         f"{v['phyll_fewer_flops_and_less_wall']}/{v['seeds']} | "
                         f"{v['median_pat_target']:.3f} | {g('median_phyll_wall_s')} | "
                         f"{g('median_pat_wall_s')} | "
                         f"{g('median_phyll_digital_flops', 1e9, '.2f')} | "
                         f"{g('median_pat_digital_flops', 1e9, '.2f')} | "
                         f"{g('median_phyll_train_queries', 1, ',.0f')} | "
                         f"{g('median_pat_train_queries', 1, ',.0f')} |")
        lines += ["", f"({tu['method']}; records: "
                  + ", ".join(f"`{v['record']}`" for v in tu["systems"])
                  + ". Their wall times were measured while the protocol ran on the same "
                  "shared 2-core machine, PhyLL and PAT one after another.)", ""]
    mm = res.get("memory")
    if mm:
        lines += ["## Peak memory against simulated time steps (acoustic, batch 32)", "",
                  "| method | remat_every | steps | step peak RSS MB | step peak above setup MB | "
                  "XLA grad temp MB |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for x in mm["rows"]:
            if "error" in x:
                lines.append(f"| {x['method']} | {x['remat']} | {x['n_steps']} | failed | | |")
                continue
            lines.append(f"| {x['method']} | {x['remat_every']} | {x['n_steps']} | "
                         f"{x['peak_rss_mb']:.0f} | {x['step_peak_above_before_mb']:.0f} | "
                         f"{_f(x.get('xla_grad_temp_mb'), '.1f')} |")
        lines += ["", f"({mm['method']}.)", ""]
        for k, v in mm["summary"].items():
            lines.append(f"- {k}: warm-step peak RSS {v['peak_rss_change_pct']:+.1f} % for "
                         f"{v['steps_ratio']:.0f}x the steps"
                         + (f"; XLA gradient buffers x{v['xla_grad_temp_ratio']:.2f}"
                            if "xla_grad_temp_ratio" in v else ""))
        lines.append("")
    s = res.get("scaling")
    if s:
        lines += ["## PhyLL time per epoch against dataset size and grid area (acoustic)", "",
                  "| n_train | s/epoch |", "| ---: | ---: |"]
        lines += [f"| {x['n_train']} | {x['epoch_s']:.2f} |" for x in s["by_dataset_size"]]
        lines += ["", f"Fitted exponent (s/epoch ~ n_train^k): k = "
                  f"{s['dataset_size_exponent']:.2f}.", "",
                  f"| grid | cells | s/epoch (n_train = {s['grid_n_train']}) |",
                  "| --- | ---: | ---: |"]
        lines += [f"| {x['nx']} x {x['ny']} | {x['area']} | {x['epoch_s']:.2f} |"
                  for x in s["by_grid_area"]]
        lines += ["", f"Fitted exponent (s/epoch ~ area^k): k = {s['grid_area_exponent']:.2f}.",
                  ""]
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def _sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            g, b = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected GRIDxBATCH such as 128x32, got {part!r}")
        if g < 16 or b < 1:
            raise argparse.ArgumentTypeError(f"grid side must be >= 16 and batch >= 1: {part!r}")
        out.append((g, b))
    if not out:
        raise argparse.ArgumentTypeError("no FDTD size given")
    return out


def _earlier_sections(out: str, only: list[str], quick: bool) -> tuple[dict, dict]:
    """The sections an earlier run left in ``out`` that this run does not measure (same
    ``--quick`` setting, not failed), and that run's ``run.json``."""
    try:
        with open(os.path.join(out, "run.json")) as fh:
            earlier = json.load(fh)
    except (OSError, ValueError):
        return {}, {}
    if not isinstance(earlier, dict) or bool(earlier.get("quick")) != bool(quick):
        return {}, {}
    kept = {}
    for name in SECTIONS:
        if name in only or name not in earlier.get("sections", ()):
            continue
        try:
            with open(os.path.join(out, f"{name}.json")) as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "error" not in data:
            kept[name] = data
    return kept, earlier


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="about 2 minutes: smaller everything")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections ({', '.join(SECTIONS)})")
    ap.add_argument("--out", default=RESULTS, help="results folder")
    ap.add_argument("--summary-only", action="store_true",
                    help="rewrite summary.md from the JSON files already in --out")
    ap.add_argument("--fdtd-sizes", default="128x32", type=_sizes,
                    help="FDTD grid sides and batches, GRIDxBATCH, comma-separated; the first "
                         "is the reference size (roofline, ratios); default 128x32")
    ap.add_argument("--numpy-max-cells", type=float, default=2e10,
                    help="skip the NumPy peer for sizes with more cell-updates a run than this "
                         "(it runs at about 1.5e8 a second on one core)")
    ap.add_argument("--batches", default="", type=_ints,
                    help="batch sizes of the batch section, comma-separated (default 1 ... 256)")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.summary_only:
        run = json.load(open(os.path.join(args.out, "run.json")))
        args.quick = run["quick"]
        args.argv = run.get("argv", ["--quick"] if args.quick else [])
        args.commands = run.get("commands")
        res = {"machine": run["machine"]}
        for name in SECTIONS:
            path = os.path.join(args.out, f"{name}.json")
            if os.path.exists(path):
                d = json.load(open(path))
                if "error" not in d:
                    res[name] = d
        with open(os.path.join(args.out, "summary.md"), "w") as fh:
            fh.write(summary_md(res, args, run["wall_s"]) + "\n")
        return 0
    only = [s for s in args.only.split(",") if s]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"unknown sections {bad}; valid: {', '.join(SECTIONS)}")
    args.fdtd_steps = 200 if args.quick else 1000
    args.repeats_pnn = 3 if args.quick else 6
    args.repeats_peer = 1 if args.quick else 2
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    res = {"machine": machine()}
    failed = []
    # a run of some sections into a folder that holds an earlier run's others keeps those in
    # the summary (and says which command measured what), instead of dropping them
    kept, earlier = _earlier_sections(args.out, only, args.quick)
    res.update(kept)
    this = " ".join(["python benchmarks/run_all.py", *args.argv])
    if kept:
        args.commands = [*earlier.get("commands", [" ".join(["python benchmarks/run_all.py",
                                                              *earlier.get("argv", [])])]),
                         this]
        log(f"kept from the earlier run in {args.out}: {', '.join(kept)}")

    def write_summary(done: list[str]) -> str:
        # after every section, so that a run stopped part-way keeps a readable summary
        wall = time.perf_counter() - t0 + (earlier.get("wall_s", 0.0) if kept else 0.0)
        info = {"wall_s": wall, "quick": args.quick, "sections": [*kept, *done],
                "argv": args.argv, "machine": res["machine"], "complete": done == only}
        if kept:
            info.update(commands=args.commands, kept_from_earlier_run=list(kept),
                        earlier_machine=earlier.get("machine"))
        with open(os.path.join(args.out, "run.json"), "w") as fh:
            json.dump(info, fh, indent=2)
        md = summary_md(res, args, wall)
        with open(os.path.join(args.out, "summary.md"), "w") as fh:
            fh.write(md + "\n")
        return md

    for i, name in enumerate(only):
        log(f"section {name}")
        t = time.perf_counter()
        try:
            if name == "roofline":
                out = bench_roofline(args, res.get("fdtd"))
            else:
                out = globals()[f"bench_{name}"](args)
        except Exception:  # noqa: BLE001 - one failed section must not lose the others
            import traceback

            tb = traceback.format_exc()
            log(f"section {name} FAILED:\n{tb}")
            failed.append(name)
            with open(os.path.join(args.out, f"{name}.json"), "w") as fh:
                json.dump({"error": tb, "section_s": time.perf_counter() - t}, fh, indent=2)
            continue
        out["section_s"] = time.perf_counter() - t
        out["quick"] = args.quick
        out["machine"] = res["machine"]
        res[name] = out
        with open(os.path.join(args.out, f"{name}.json"), "w") as fh:
            json.dump(out, fh, indent=2, default=float)
        log(f"section {name} done in {out['section_s']:.0f} s")
        md = write_summary(only[:i + 1])
    md = write_summary(only)
    print(md)
    if failed:
        log(f"failed sections: {', '.join(failed)} (tracebacks in their JSON files)")
        return 1
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
