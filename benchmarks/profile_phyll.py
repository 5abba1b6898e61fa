"""Where PhyLL's wall time goes on the acoustic vowel run (issues 12 and 27: digital time).

    python benchmarks/profile_phyll.py [--epochs 10] [--modes off,auto]
        [--out benchmarks/results/phyll_profile.json]

1. ``pnn train --system acoustic --task vowels --method phyll --epochs N --set
   device_epoch=MODE`` as a user runs it (a subprocess), for each mode (``off``: the host path,
   step by step; ``auto``: each epoch one compiled program where possible, see
   :mod:`pnn.train.phyll_device`), twice: with an empty compilation cache (cold, every program
   compiled) and again with the cache that run filled (warm; see :mod:`pnn.jit_cache`): the
   records' ``cost.wall_s``, ``physical_s``, ``digital_s`` (for device epochs the physical
   time is attributed, as the record's ``device_epoch`` entry says), the process time and,
   from the history, the learning time with evaluation apart.
2. The same training in this process, instrumented without touching the trainer:
   * every physical query (``Ledger.query``) timed, split by purpose (train / eval) and into
     the simulator's first call per batch shape (compilation) and the rest;
   * JAX compilation time from ``jax.monitoring`` duration events (tracing + XLA compile),
     attributed to physical queries when inside one, otherwise to the digital part;
   * the digital part under ``cProfile``: the functions with the most cumulative time, and the
     number of jitted dispatches.
"""

from __future__ import annotations

import argparse
import cProfile
import collections

import json
import os
import pstats
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np


def cli_run(epochs: int, cache_dir: str, mode: str = "auto") -> dict:
    """One ``pnn train`` process with its compilation cache in ``cache_dir`` (empty: a cold
    start, every program compiled; filled by an earlier run: a warm start)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env["PNN_COMPILE_CACHE"] = cache_dir
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "rec.json")
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "pnn", "train",
                            "--system", "acoustic", "--task", "vowels", "--method", "phyll",
                            "--epochs", str(epochs), "--set", f"device_epoch={mode}",
                            "--out", out],
                           capture_output=True, text=True, timeout=1800, env=env)
        total = time.perf_counter() - t
        if p.returncode != 0:
            return {"error": p.stderr[-3000:]}
        rec = json.load(open(out))
    h = rec["history"][-1]
    c = rec["cost"]
    return {"command": f"pnn train --system acoustic --task vowels --method phyll --epochs "
                       f"{epochs} --set device_epoch={mode}",
            "device_epoch": rec.get("device_epoch"),
            "process_s": total, "wall_s": c["wall_s"], "physical_s": c["physical_s"],
            "digital_s": c["digital_s"],
            "digital_fraction": c["digital_s"] / c["wall_s"],
            "learning_wall_s": h["wall_s"], "eval_s": h["eval_s"],
            "train_queries": h["train_queries"], "eval_queries": h["eval_queries"],
            "digital_flops": c["digital_flops"],
            "val_accuracy": rec.get("val_accuracy"), "test_accuracy": rec.get("test_accuracy")}


def instrumented(epochs: int) -> dict:
    from pnn.cost import Ledger
    from pnn.registry import build_layers, get_trainer, load_task

    compile_events: list[tuple[str, float, bool]] = []
    state = {"in_query": False}

    def on_duration(event, duration, **kw):
        if "compile" in event or "trac" in event or "lower" in event:
            compile_events.append((event, duration, state["in_query"]))

    jax.monitoring.register_event_duration_secs_listener(on_duration)

    queries = collections.defaultdict(lambda: {"n": 0, "s": 0.0, "first_s": 0.0})
    seen_shapes = set()
    orig_query = Ledger.query

    def timed_query(self, layer, x, purpose="train"):
        key = (layer.spec.name, np.shape(x))
        state["in_query"] = True
        t = time.perf_counter()
        try:
            return orig_query(self, layer, x, purpose)
        finally:
            dt = time.perf_counter() - t
            state["in_query"] = False
            q = queries[purpose]
            q["n"] += 1
            q["s"] += dt
            if key not in seen_shapes:
                seen_shapes.add(key)
                q["first_s"] += dt

    Ledger.query = timed_query
    data = load_task("vowels", seed=0)
    tr = get_trainer("phyll")
    cfg = tr.Config(epochs=epochs)
    layers = build_layers("acoustic", "phyll", cfg, data, seed=0)
    prof = cProfile.Profile()
    ledger = Ledger()
    t = time.perf_counter()
    try:
        prof.enable()
        rec, _ = tr.train(layers, data, cfg, seed=0, ledger=ledger)
        prof.disable()
    finally:
        Ledger.query = orig_query
    total = time.perf_counter() - t

    st = pstats.Stats(prof)
    rows = []
    for (fn_file, line, fn), (cc, nc, tt, ct, _) in st.stats.items():
        rows.append({"function": f"{os.path.basename(fn_file)}:{line}:{fn}", "file": fn_file,
                     "calls": nc, "tottime_s": tt, "cumtime_s": ct})

    def find(suffix):
        hits = [r for r in rows if r["function"].endswith(suffix)]
        return max(hits, key=lambda r: r["cumtime_s"]) if hits else None

    steps = rec["steps"]
    phys = sum(q["s"] for q in queries.values())
    comp_phys = sum(d for _, d, inq in compile_events if inq)
    comp_dig = sum(d for _, d, inq in compile_events if not inq)
    top = sorted((r for r in rows if "site-packages/jax" not in r["file"]
                  and "<built-in" not in r["function"] and "{" not in r["function"]),
                 key=lambda r: -r["cumtime_s"])[:25]
    interesting = {}
    for name in ("step", "predict", "scores", "_block_train", "query", "_embed_pos_neg",
                 "prepare", "before_eval", "after_step", "validate_input", "to_dict"):
        r = find(f":{name}")
        if r:
            interesting[name] = {k: r[k] for k in ("function", "calls", "cumtime_s")}
    pjit_calls = sum(r["calls"] for r in rows if r["function"].endswith("_pjit_call_impl")
                     or r["function"].endswith("cache_miss"))
    h = rec["history"][-1]
    return {"epochs": epochs, "steps": steps, "process_s": total,
            "ledger": rec["cost"], "learning_wall_s": h["wall_s"], "eval_s": h["eval_s"],
            "physical_queries_by_purpose": {k: dict(v) for k, v in queries.items()},
            "physical_s": phys,
            "compile_s_inside_physical_queries": comp_phys,
            "compile_s_digital": comp_dig,
            "compile_events": len(compile_events),
            "hotspots": interesting, "top_cumulative": top,
            "jit_dispatch_calls_seen": pjit_calls}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10, help="default: pnn train's default")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results", "phyll_profile.json"))
    ap.add_argument("--skip-cli", action="store_true")
    ap.add_argument("--modes", default="off,auto", help="device_epoch values to run the CLI with")
    ap.add_argument("--skip-instrumented", action="store_true")
    args = ap.parse_args(argv)
    res = {"machine": {"backend": jax.default_backend(),
                       "device_kind": jax.devices()[0].device_kind, "cpu_count": os.cpu_count(),
                       "jax": jax.__version__},
           "cli": {}}
    for mode in ([] if args.skip_cli else args.modes.split(",")):
        with tempfile.TemporaryDirectory() as cache:
            res["cli"][mode] = {"cold": cli_run(args.epochs, cache, mode),  # an empty cache
                                "warm": cli_run(args.epochs, cache, mode)}  # the same again
    res["instrumented"] = None if args.skip_instrumented else instrumented(args.epochs)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=2, default=str)
    for mode, runs in res["cli"].items():
        for tag, c in runs.items():
            if "error" in c:
                print(f"CLI device_epoch={mode} ({tag}) failed: {c['error']}")
                continue
            print(f"CLI device_epoch={mode} ({tag} compilation cache): process "
                  f"{c['process_s']:.1f} s, wall {c['wall_s']:.1f} s = physical "
                  f"{c['physical_s']:.1f} + digital {c['digital_s']:.1f} "
                  f"({100 * c['digital_fraction']:.0f} % digital); learning "
                  f"{c['learning_wall_s']:.1f} s, evaluation {c['eval_s']:.1f} s")
    i = res["instrumented"]
    if i is None:
        return 0
    q = i["physical_queries_by_purpose"]
    print(f"instrumented: {i['process_s']:.1f} s; physical {i['physical_s']:.1f} s "
          + ", ".join(f"{k}: {v['n']} calls {v['s']:.1f} s (first per shape {v['first_s']:.1f})"
                      for k, v in q.items())
          + f"; compile inside queries {i['compile_s_inside_physical_queries']:.1f} s, digital "
          f"compile {i['compile_s_digital']:.1f} s")
    for k, v in i["hotspots"].items():
        print(f"  {k:<16} {v['calls']:>7} calls {v['cumtime_s']:8.2f} s  {v['function']}")
    print("top cumulative (non-jax):")
    for r in i["top_cumulative"][:15]:
        print(f"  {r['cumtime_s']:8.2f} s {r['calls']:>8}  {r['function']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
