"""Jobs shared by worker processes on one host or many, through an Optuna RDB storage.

A :class:`Board` is one Optuna study in an RDB storage (an SQLite file on one machine, a
PostgreSQL or MySQL URL for a cluster) whose trials are jobs: every job is enqueued once, as a
``WAITING`` trial carrying its key in the user attribute ``job``. A worker claims a job by moving
its trial from ``WAITING`` to ``RUNNING`` with the storage's atomic update (the one
``optuna.Study.ask`` pops its queue with), so each job is claimed by one worker; it claims only
jobs whose ``needs`` are complete. While the job runs, the worker records who it is (host,
process id and start time) on the trial and keeps Optuna's heartbeat; the job's result is stored
on the trial (compressed JSON, in user attributes of at most 30,000 characters each, which every
RDB backend takes) and the trial completed.

A worker that dies leaves its job ``RUNNING``. The job is failed and enqueued again (Optuna's
retry callback, ``RetryHeartbeatStaleTrialCallback``, ``RetryFailedTrialCallback`` before 4.9)
by any live worker that sees it:

* on the same host, as soon as the process that held it is gone (psutil: no such process,
  another process under that id, or a zombie): an explicit event, no clock involved;
* on any host, once the job's heartbeat is older than :data:`GRACE_S` (Optuna's
  ``fail_stale_trials``): the case of a host that went down.

A job is retried at most :data:`MAX_RETRY` times within one launch; a job that raised is not
retried (its error is kept on the trial, and every worker stops). Launching the board again
(:meth:`Board.open`) enqueues every failed job once more, so a comparison resumes after any
failure by running the same command. Results are read from the first completed trial of each
key; a job that two workers ran (possible only when two launches re-enqueue the same failed job
at the same instant) gives the same result twice.

Test hook: a worker whose environment sets :data:`KILL_ENV` to a job's key kills itself with
SIGKILL at that job's first progress event (:func:`sigkill_hook`), a deterministic stand-in
for a host that dies in the middle of a job.
"""

from __future__ import annotations

import base64
import dataclasses
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import warnings
import zlib
from typing import Callable

import optuna
import psutil
import sqlalchemy
from optuna.trial import TrialState
from sqlalchemy.exc import OperationalError

__all__ = ["Job", "Board", "JobFailed", "work", "launch", "sigkill_hook", "rdb_storage",
           "KILL_ENV", "HEARTBEAT_S", "GRACE_S", "MAX_RETRY"]

#: seconds between a running job's heartbeats, and the age after which a job whose heartbeat
#: stopped is failed by a worker on another host (a worker on the job's own host does not wait:
#: it sees the process is gone)
HEARTBEAT_S, GRACE_S = 20, 120
#: retries of a job whose worker died, within one launch
MAX_RETRY = 2
#: test hook (see the module docstring); never set it in normal use
KILL_ENV = "PNN_TEST_SIGKILL_IN_JOB"
_CHUNK = 30_000


class JobFailed(RuntimeError):
    """A job raised (its error is on its trial), or its workers died more often than allowed."""


@dataclasses.dataclass(frozen=True)
class Job:
    """A job: its ``key`` (unique on the board) and the keys of the jobs it needs done first."""

    key: str
    needs: tuple[str, ...] = ()


def _pack(text: str) -> list[str]:
    raw = base64.b64encode(zlib.compress(text.encode("utf-8"), 6)).decode("ascii")
    return [raw[i:i + _CHUNK] for i in range(0, len(raw), _CHUNK)] or [""]


def _unpack(attrs: dict, prefix: str) -> str:
    n = attrs[f"{prefix}.n"]
    raw = "".join(attrs[f"{prefix}.{i}"] for i in range(n))
    return zlib.decompress(base64.b64decode(raw)).decode("utf-8")


def _retry_callback():
    """Optuna's callback that enqueues a failed job again (its name changed in Optuna 4.9)."""
    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    if cls is None:  # pragma: no cover - Optuna < 4.9
        cls = optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():  # marked experimental
        warnings.simplefilter("ignore")
        return cls(max_retry=MAX_RETRY)


def rdb_storage(url: str, **kwargs):
    """Optuna's RDB storage of ``url`` (``kwargs``: more RDBStorage arguments), made safe for
    several processes on one SQLite file: every transaction takes the write lock when it
    begins (``BEGIN IMMEDIATE``, SQLAlchemy's recipe for pysqlite), waiting up to a minute for
    it, so two processes that read and then write never deadlock (SQLite would refuse one of
    them at once instead of waiting)."""
    sqlite = url.startswith("sqlite")
    kw = {"connect_args": {"timeout": 60, "isolation_level": None}} if sqlite else {}
    with warnings.catch_warnings():  # the heartbeat is marked experimental
        warnings.simplefilter("ignore")
        storage = optuna.storages.RDBStorage(url, engine_kwargs=kw, **kwargs)
    if sqlite:
        sqlalchemy.event.listen(storage.engine, "begin",
                                lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    return storage


def _storage(url: str):
    """The board's storage: :func:`rdb_storage` with heartbeats and the retry callback."""
    params = inspect.signature(optuna.storages.RDBStorage).parameters
    name = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params
            else "failed_trial_callback")
    return rdb_storage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                       **{name: _retry_callback()})


def _me(number: int) -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": round(psutil.Process().create_time(), 3), "trial": number}


def _gone(who: dict) -> bool:
    """Whether the process ``who`` (:func:`_me`, on this host) has ended."""
    try:
        p = psutil.Process(who["pid"])
        return (round(p.create_time(), 3) != who["started"]
                or p.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


@dataclasses.dataclass
class _Claim:
    trial_id: int
    number: int
    key: str


class Board:
    """The jobs of one study in an RDB storage (see the module docstring)."""

    def __init__(self, url: str, name: str, storage=None):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.url, self.name = url, name
        self.storage = storage if storage is not None else _storage(url)
        self.study = optuna.load_study(study_name=name, storage=self.storage)
        self.jobs: dict[str, Job] = {}

    # ------------------------------------------------------------------ creating, joining
    @classmethod
    def open(cls, url: str, name: str, jobs: list[Job], meta: str, *, wait_s: float = 600,
             log: Callable[[str], None] = print) -> "Board":
        """Create the board ``name`` with ``jobs`` and ``meta`` (text every worker reads, e.g.
        the experiment), or join it when another launch created it; failed jobs are enqueued
        again. Launches on several hosts may start at once: the study's creation is atomic
        (a unique name), and only its creator enqueues the jobs."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = _storage(url)
        try:
            study = optuna.create_study(study_name=name, storage=storage)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            created = False
        if created:
            for key in [j.key for j in jobs]:
                study.add_trial(optuna.create_trial(state=TrialState.WAITING,
                                                    user_attrs={"job": key}))
            for i, part in enumerate(_pack(meta)):
                study.set_user_attr(f"meta.{i}", part)
            study.set_user_attr("meta.n", len(_pack(meta)))  # last: the board is ready
        board = cls(url, name, storage)
        board._wait_ready(wait_s)
        board.jobs = {j.key: j for j in jobs}
        if not created:
            board._check_jobs(jobs)
            board.requeue_failed(log)
        return board

    def _wait_ready(self, wait_s: float) -> None:
        """Wait until the creator has enqueued every job (a second, usually)."""
        deadline = time.monotonic() + wait_s
        while "meta.n" not in self.study.user_attrs:
            if time.monotonic() > deadline:
                raise JobFailed(f"study {self.name!r} in {self.url} holds no jobs after "
                                f"{wait_s:.0f} s: the launch that created it died before it "
                                f"enqueued them; delete the study (optuna delete-study "
                                f"--study-name {self.name} --storage URL) and launch again")
            time.sleep(0.5)

    def _check_jobs(self, jobs: list[Job]) -> None:
        have = {t.user_attrs.get("job") for t in self.trials()}
        want = {j.key for j in jobs}
        if have != want:
            raise JobFailed(f"study {self.name!r} in {self.url} holds other jobs than this "
                            f"launch's ({sorted(have ^ want)[:4]} differ); a study name is one "
                            f"comparison")

    def meta(self) -> str:
        """The text given to :meth:`open` by the board's creator."""
        return _unpack(self.study.user_attrs, "meta")

    # ------------------------------------------------------------------ reading
    def trials(self) -> list:
        return self.study.get_trials(deepcopy=False)

    def by_key(self) -> dict[str, list]:
        out: dict[str, list] = {}
        for t in self.trials():
            out.setdefault(t.user_attrs.get("job"), []).append(t)
        return out

    def done(self) -> set[str]:
        return {k for k, ts in self.by_key().items()
                if any(t.state == TrialState.COMPLETE for t in ts)}

    def failed(self) -> dict[str, str]:
        """``{key: error}`` of the jobs with no completed, waiting or running trial."""
        out = {}
        for key, ts in self.by_key().items():
            if all(t.state in (TrialState.FAIL, TrialState.PRUNED) for t in ts) and any(
                    t.state == TrialState.FAIL for t in ts):
                last = max((t for t in ts if t.state == TrialState.FAIL), key=lambda t: t.number)
                out[key] = last.user_attrs.get("error") or (
                    f"its worker died {len([t for t in ts if t.state == TrialState.FAIL])} "
                    f"time(s) ({last.user_attrs.get('worker', {}).get('host', '?')})")
        return out

    def counts(self) -> dict[str, int]:
        """Jobs done, running and left (waiting or failed)."""
        keys = self.by_key()
        done = self.done()
        running = {k for k, ts in keys.items() if k not in done
                   and any(t.state == TrialState.RUNNING for t in ts)}
        return {"done": len(done), "running": len(running),
                "left": len(keys) - len(done) - len(running), "total": len(keys)}

    def result(self, key: str) -> str:
        """The result text of ``key``'s first completed trial."""
        ts = [t for t in self.by_key().get(key, []) if t.state == TrialState.COMPLETE]
        if not ts:
            raise KeyError(f"job {key!r} of {self.name!r} is not done")
        return _unpack(min(ts, key=lambda t: t.number).user_attrs, "result")

    # ------------------------------------------------------------------ failures
    def reap(self) -> list[str]:
        """Fail (and enqueue again, :data:`MAX_RETRY` times) the running jobs whose worker is
        gone: on this host at once, elsewhere after the heartbeat's grace period. Returns the
        keys enqueued again or failed."""
        host, reaped = socket.gethostname(), []
        for t in self.trials():
            who = t.user_attrs.get("worker") or {}
            if (t.state != TrialState.RUNNING or who.get("host") != host
                    or who.get("trial") != t.number or not _gone(who)):
                continue
            try:
                if self.storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                    _retry_callback()(self.study, self.storage.get_trial(t._trial_id))
                    reaped.append(t.user_attrs["job"])
            except (optuna.exceptions.UpdateFinishedTrialError, OperationalError):
                pass  # another worker failed it first
        before = {t.number for t in self.trials() if t.state == TrialState.FAIL}
        with warnings.catch_warnings():  # marked experimental
            warnings.simplefilter("ignore")
            optuna.storages.fail_stale_trials(self.study)
        reaped += [t.user_attrs.get("job") for t in self.trials()
                   if t.state == TrialState.FAIL and t.number not in before]
        return reaped

    def requeue_failed(self, log: Callable[[str], None] = print) -> None:
        """Enqueue once more every job with no completed, waiting or running trial."""
        failed = self.failed()
        for key, ts in self.by_key().items():
            if key not in failed:
                continue
            last = max(ts, key=lambda t: t.number)
            self.study.add_trial(optuna.create_trial(
                state=TrialState.WAITING, user_attrs={"job": key},
                system_attrs={"failed_trial": last.number, "retry_history": []}))
            log(f"job {key} failed before (trial {last.number}); enqueued again")

    # ------------------------------------------------------------------ claiming, running
    def claim(self) -> _Claim | None:
        """The first waiting job whose needs are done, now ``RUNNING`` for this process."""
        by_key = self.by_key()
        done = {k for k, ts in by_key.items() if any(t.state == TrialState.COMPLETE for t in ts)}
        waiting = sorted((t for ts in by_key.values() for t in ts
                          if t.state == TrialState.WAITING), key=lambda t: t.number)
        for t in waiting:
            key = t.user_attrs.get("job")
            job = self.jobs.get(key, Job(key))
            if key not in done and not set(job.needs) <= done:
                continue
            try:
                if not self.storage.set_trial_state_values(t._trial_id,
                                                           state=TrialState.RUNNING):
                    continue
            except (optuna.exceptions.UpdateFinishedTrialError, OperationalError):
                continue  # another worker took it
            self.storage.record_heartbeat(t._trial_id)
            self.storage.set_trial_user_attr(t._trial_id, "worker", _me(t.number))
            if key in done:  # enqueued twice (two launches at once): its result is there
                self.storage.set_trial_state_values(t._trial_id, state=TrialState.PRUNED)
                continue
            return _Claim(t._trial_id, t.number, key)
        return None

    def run(self, claim: _Claim, execute: Callable[[str], tuple[str, float]]) -> None:
        """Run ``execute(key) -> (result text, value)`` for a claimed job, with heartbeats;
        store the result and complete the trial, or keep the error and fail it."""
        stop = threading.Event()

        def beat():
            while not stop.wait(HEARTBEAT_S):
                try:
                    self.storage.record_heartbeat(claim.trial_id)
                except OperationalError:  # a busy SQLite file: the next beat will do
                    pass

        thread = threading.Thread(target=beat, daemon=True, name=f"heartbeat {claim.key}")
        thread.start()
        try:
            text, value = execute(claim.key)
            parts = _pack(text)
            for i, part in enumerate(parts):
                self.storage.set_trial_user_attr(claim.trial_id, f"result.{i}", part)
            self.storage.set_trial_user_attr(claim.trial_id, "result.n", len(parts))
            self.storage.set_trial_state_values(claim.trial_id, state=TrialState.COMPLETE,
                                                values=[float(value)])
        except BaseException as e:
            error = "".join(traceback.format_exception_only(type(e), e)).strip()
            self.storage.set_trial_user_attr(claim.trial_id, "error", error[-2000:])
            self.storage.set_trial_state_values(claim.trial_id, state=TrialState.FAIL)
            if isinstance(e, KeyboardInterrupt):  # not the job's fault: it runs again
                _retry_callback()(self.study, self.storage.get_trial(claim.trial_id))
            raise
        finally:
            stop.set()
            thread.join()


def work(board: Board, execute: Callable[[str], tuple[str, float]], *,
         log: Callable[[str], None] = print, poll_s: float = 1.0) -> int:
    """Claim and run jobs until every job of ``board`` is done; returns the jobs this worker
    ran. Waits (polling every ``poll_s``) while the jobs left are running elsewhere or wait for
    others; fails dead workers' jobs as it goes (:meth:`Board.reap`).

    Raises:
        JobFailed: a job raised, or its workers died more than :data:`MAX_RETRY` times.
    """
    ran = 0
    while True:
        for key in board.reap():
            log(f"job {key}: its worker is gone; the job is failed and enqueued again")
        failed = board.failed()
        if failed:
            raise JobFailed("; ".join(f"job {k}: {e}" for k, e in failed.items()))
        claim = board.claim()
        if claim is None:
            if len(board.done()) == len(board.by_key()):
                return ran
            time.sleep(poll_s)
            continue
        board.run(claim, execute)
        ran += 1


def launch(n: int, argv: list[str]) -> list:
    """Start ``n`` worker processes ``python argv...`` (same environment and folder); their
    output goes to this process's."""
    return [subprocess.Popen([sys.executable, *argv]) for _ in range(n)]


def sigkill_hook(key: str) -> None:
    """SIGKILL this process if :data:`KILL_ENV` names job ``key`` (see the module docstring)."""
    if os.environ.get(KILL_ENV) == key:
        os.kill(os.getpid(), signal.SIGKILL)
