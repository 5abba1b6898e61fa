"""A comparison (``kind = "compare"``) as jobs that worker processes share through an Optuna
RDB storage (:mod:`pnn.workers`), on one host or many.

The jobs are ``tune/<method>`` (the method's whole Optuna study, its trials one after another,
as :func:`pnn.compare.compare` runs it) and ``run/<method>/<seed>`` (one training run of the
tuned or given configuration). A run needs its method's tuning; a method that matches a
trainable-parameter budget (the digital MLP) also needs the run, on the same seed, of the
physical method that sets it (:func:`pnn.compare.budget_source`), and its tuning needs that run
on the first seed. Every job reads what it needs back from the storage.

Each job runs the code a one-process comparison runs, on the same inputs, so the records equal
that comparison's (wall times, memory peaks and the embedded experiment's ``workers`` and
``storage`` apart): each method's trials run in sequence inside its job, so the TPE sampler sees
the same history; a tuning job that finds its study partial (its earlier worker died) deletes it
and starts it again from the first trial (:func:`pnn.tune.tune`'s ``restart``), because a
resumed sampler proposes other values. Parallel trials within a study (``tune_jobs`` > 1) are
not reproducible, here as in one process.

Worker processes started by :func:`run_grid` run ``python -m pnn.experiment.compare_jobs URL
STUDY``: they read the experiment from the study (the text its creator stored) and work until
every job is done.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from pnn import __version__, registry
from pnn.compare import (_Comparison, _json_default, _tune, base_values, budget_source,
                         method_order)
from pnn.experiment.records import _embed
from pnn.experiment.spec import Experiment
from pnn.jit_cache import enable_compile_cache
from pnn.workers import Board, Job, JobFailed, launch, rdb_storage, sigkill_hook, work

__all__ = ["plan", "study_name", "compare_split", "run_grid", "main"]


def compare_split(exp: Experiment) -> Callable:
    """``seed -> Dataset`` of a compare experiment (each seed its own split, or the one split
    of ``split_seed`` for every seed), each split loaded once."""
    spec, cache = exp.compare, {}

    def load(seed):
        if seed not in cache:
            cache[seed] = exp.task.load(seed)
        return cache[seed]

    if spec.split == "per_seed":
        return load
    return lambda seed: load(spec.split_seed)


def plan(exp: Experiment) -> list[Job]:
    """The jobs of ``exp`` in the order one process runs them (see the module docstring)."""
    methods, seeds = list(exp.methods), list(exp.seeds)
    tuning = exp.compare.tune_trials > 0
    jobs = []
    for m in method_order(methods):
        src = budget_source(methods, m)
        if tuning:
            jobs.append(Job(f"tune/{m}", (f"run/{src}/{seeds[0]}",) if src else ()))
        for s in seeds:
            jobs.append(Job(f"run/{m}/{s}", ((f"tune/{m}",) if tuning else ())
                            + ((f"run/{src}/{s}",) if src else ())))
    return jobs


def _shared_part(exp: Experiment) -> dict:
    """The experiment without what differs between the launches of one comparison: the
    output folder, the number of local workers and the storage's URL."""
    d = exp.to_dict()
    d.pop("output", None)
    d["compare"] = {k: v for k, v in d.get("compare", {}).items()
                    if k not in ("workers", "storage")}
    return d


def study_name(exp: Experiment) -> str:
    """The board's study name: a digest of the experiment (less output, workers and storage)
    and the pnn version, so every launch of one comparison joins one board, and another
    comparison or version gets its own."""
    text = json.dumps([_shared_part(exp), __version__], sort_keys=True, default=str)
    return f"pnn-compare-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


class _Executor:
    """Runs one job of ``exp`` (``execute(key) -> (result JSON, value)``), reading what it
    needs (tuned configurations, budgets) from ``board``."""

    def __init__(self, exp: Experiment, board: Board, log: Callable[[str], None]):
        self.exp, self.board, self.log = exp, board, log
        self.methods, self.seeds = list(exp.methods), list(exp.seeds)
        self.split = compare_split(exp)
        self.overrides = {m: exp.settings(m) for m in self.methods}
        self.system_kwargs = dict(exp.system.kwargs)
        self.levers = {k: v for k, v in registry.levers(exp.system.name).items()
                       if k not in self.system_kwargs}

    def __call__(self, key: str) -> tuple[str, float]:
        kind, method, *seed = key.split("/")
        if kind == "tune":
            res = self._tune(key, method)
            return json.dumps(res, default=_json_default), res["best_val_accuracy"]
        rec = self._run(key, method, int(seed[0]))
        val = rec.get("val_accuracy")
        self.log(f"{key}: " + (f"val {val:.1%}, " if isinstance(val, float) else "")
                 + f"test {rec['test_accuracy']:.1%}, {rec['run_s']:.1f} s")
        return json.dumps(rec, default=_json_default), rec["test_accuracy"]

    def _read(self, key: str):
        return json.loads(self.board.result(key))

    def _budget(self, method: str, seed: int) -> int | None:
        src = budget_source(self.methods, method)
        return None if src is None else self._read(f"run/{src}/{seed}")["n_trainable_params"]

    def _tune(self, key: str, method: str) -> dict:
        exp, seed = self.exp, self.seeds[0]
        self.log(f"{key}: {exp.compare.tune_trials} trials on seed {seed}'s validation split")
        base = base_values(method, self.overrides[method], self._budget(method, seed))

        def progress(number, val):
            self.log(f"{key}: trial {number}: val {val:.1%}")
            sigkill_hook(key)

        options = {"storage": rdb_storage(self.board.url), "jobs": exp.compare.tune_jobs, "restart": True,
                   "task_options": exp.task.cli_options(), "progress": progress}
        res = _tune(method, exp.system.name, self.split(seed), seed, exp.compare.tune_trials,
                    options, base, exp.devices, self.system_kwargs, self.levers)
        self.log(f"{key}: best val {res['best_val_accuracy']:.1%} ({res['n_complete']} trials)")
        return res

    def _run(self, key: str, method: str, seed: int) -> dict:
        exp, trials = self.exp, self.exp.compare.tune_trials
        tuned = self._read(f"tune/{method}") if trials else None
        runs = _Comparison(exp.system.name, self.seeds, self.system_kwargs, exp.devices, None,
                           n=1, on_start=lambda *a: self.log(f"{key}: training"),
                           on_done=None, progress_factory=lambda *a: _Beat(key),
                           checkpoint=None)
        budget = self._budget(method, seed)
        if budget is not None:
            runs.budget[seed] = budget
        runs.run(method, seed, self.split, self.overrides[method], tuned, trials)
        return runs.records[-1]


class _Beat:
    """A run's epoch progress: the place of the test hook (:func:`pnn.workers.sigkill_hook`)."""

    def __init__(self, key: str):
        self.key = key

    def update(self, entry) -> None:
        sigkill_hook(self.key)

    def close(self) -> None:
        pass


def _watch(board: Board, procs: list, note: Callable[[str], None]) -> None:
    """Wait for the local worker processes, saying how many jobs are done when it changes;
    the job of a worker that died is failed and enqueued again at once (the others would see
    it only between their own jobs)."""
    last = None
    try:
        while True:
            alive = [p for p in procs if p.poll() is None]
            for key in board.reap():
                note(f"job {key}: its worker is gone; the job is failed and enqueued again")
            c = board.counts()
            line = (f"jobs: {c['done']}/{c['total']} done, {c['running']} running; "
                    f"{len(alive)} local worker(s) at work")
            if line != last:
                note(line)
                last = line
            if not alive:
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                alive[0].wait(timeout=2)
    finally:
        for p in procs:  # an interrupted launch leaves no worker behind
            if p.poll() is None:
                p.terminate()
                p.wait()


def _collect(board: Board, exp: Experiment) -> tuple[list[dict], dict[str, dict]]:
    """The records (in the one-process order, each embedding ``exp``) and tuning results."""
    jobs = [j.key for j in plan(exp)]
    records = [_embed(json.loads(board.result(k)), exp) for k in jobs if k.startswith("run/")]
    tuned = {k.split("/")[1]: json.loads(board.result(k)) for k in jobs
             if k.startswith("tune/")}
    return records, tuned


def run_grid(exp: Experiment, note: Callable[[str], None],
             out: Path | None) -> tuple[list[dict], dict[str, dict]]:
    """Run ``exp``'s jobs with ``[compare] workers`` local worker processes (in this process
    when 1) on ``[compare] storage`` (default ``sqlite:///OUT/workers.db``; a temporary folder
    without ``out``), beside any other launch of the same comparison; returns the records and
    the tuning results once every job is done, in the order of a one-process comparison.

    Raises:
        JobFailed: a job raised, or the workers stopped before every job was done (run the
            same command again to resume: finished jobs are kept).
    """
    spec = exp.compare
    with contextlib.ExitStack() as stack:
        folder = out or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pnn-")))
        folder.mkdir(parents=True, exist_ok=True)
        url = spec.storage or f"sqlite:///{(folder / 'workers.db').resolve()}"
        name, jobs = study_name(exp), plan(exp)
        board = Board.open(url, name, jobs, json.dumps(_shared_part(exp)), log=note)
        c = board.counts()
        note(f"{c['total']} jobs (study {name} in {url}): {c['done']} done already; "
             f"{spec.workers} worker(s) here")
        if spec.workers == 1:
            work(board, _Executor(exp, board, note), log=note)
        else:
            _watch(board, launch(spec.workers, ["-m", "pnn.experiment.compare_jobs", url,
                                                name]), note)
        missing = len(jobs) - len(board.done())
        if missing:
            raise JobFailed(f"{missing} of {len(jobs)} jobs not done: "
                            + ("; ".join(f"{k}: {e}" for k, e in board.failed().items())
                               or "the workers stopped")
                            + "; run the same command again to resume (finished jobs are "
                              "kept)")
        return _collect(board, exp)


def main(argv: list[str]) -> int:
    """A worker process: ``python -m pnn.experiment.compare_jobs URL STUDY``."""
    if len(argv) != 2:
        print("usage: python -m pnn.experiment.compare_jobs STORAGE_URL STUDY_NAME",
              file=sys.stderr)
        return 2
    url, name = argv
    tag = f"pnn worker {socket.gethostname()}:{os.getpid()}"
    enable_compile_cache()  # as the pnn command does: programs compiled once, by any process

    def log(text: str) -> None:
        print(f"{tag}: {text}", file=sys.stderr, flush=True)

    board = Board(url, name)
    exp = Experiment.from_dict(json.loads(board.meta()), where=f"study {name} (experiment)")
    board.jobs = {j.key: j for j in plan(exp)}
    try:
        n = work(board, _Executor(exp, board, log), log=log)
    except JobFailed as e:
        log(f"stopped: {e}")
        return 1
    except KeyboardInterrupt:
        return 130
    log(f"every job is done ({n} ran here)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
