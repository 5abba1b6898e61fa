"""The comparison as jobs of worker processes on one Optuna RDB storage (pnn.workers,
pnn.experiment.compare_jobs, docs/cluster.md): two workers on one SQLite file give the records
of one process; a worker killed in the middle of a job has that job run again exactly once, and
the records are still those of one process.

Nothing here waits on a clock: the killed worker kills itself at a fixed point of a job (the
``PNN_TEST_SIGKILL_IN_JOB`` hook, SIGKILL at the job's first progress event), the test waits for
its exit, and the next worker fails the job because the process that held it is gone (psutil),
not because a heartbeat grew old."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from pnn.cli import build_parser, main
from pnn.config import ConfigError
from pnn.experiment import Experiment
from pnn.experiment.compare_jobs import plan, study_name
from pnn.workers import KILL_ENV
from tests.docs_examples import ROOT, blocks

PAGE = "docs/cluster.md"
#: the budgets of docs/cluster.md's commands, cut: one epoch, three vowels
SHRINK = ["--epochs", "1", "--classes", "iy,uw,aa"]
#: the digital MLP tuned with two trials of one epoch, then run on two seeds
TUNED = ["compare", "--methods", "bp", "--seeds", "2", "--classes", "iy,uw,aa", "--tune", "2",
         "--set", "bp.epochs=1"]


def _timing(key: str) -> bool:
    """Wall times (``wall_s``, ``run_s``, ``physical_s_attributed``, ...) and memory peaks:
    what differs between two runs of the same training."""
    return "s" in key.split("_") or key == "peak_rss_mb"


def _same(obj):
    if isinstance(obj, dict):
        return {k: _same(v) for k, v in obj.items() if not _timing(k) and k != "experiment"}
    if isinstance(obj, list):
        return [_same(v) for v in obj]
    return obj


def _records(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())


def _assert_same_records(got: list[dict], want: list[dict], **execution) -> None:
    assert [(r["method"], r["seed"]) for r in got] == [(r["method"], r["seed"]) for r in want]
    assert [r["params_sha256"] for r in got] == [r["params_sha256"] for r in want]
    assert [r["test_accuracy"] for r in got] == [r["test_accuracy"] for r in want]
    assert _same(got) == _same(want)
    for g, w in zip(got, want):  # the embedded experiments differ in how it ran, only
        assert g["experiment"]["compare"] == {**w["experiment"]["compare"], **execution}
        assert {k: v for k, v in g["experiment"].items() if k not in ("compare", "output")} \
            == {k: v for k, v in w["experiment"].items() if k not in ("compare", "output")}


def _trials_by_job(url: str) -> dict[str, list[str]]:
    # the storage holds the board and the tuning studies
    (name,) = [s.study_name for s in optuna.get_all_study_summaries(url)
               if s.study_name.startswith("pnn-compare-")]
    study = optuna.load_study(study_name=name, storage=url)
    out: dict[str, list[str]] = {}
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        out.setdefault(t.user_attrs["job"], []).append(t.state.name)
    return out


def _page_commands(match: str) -> list[list[str]]:
    (block,) = [b for b in blocks(PAGE) if match in b.text]
    return [shlex.split(c) for c in block.commands()]


def test_two_workers_on_one_sqlite_storage_give_the_one_process_records(tmp_path,
                                                                         monkeypatch):
    """docs/cluster.md's first block, its budget cut (SHRINK): two worker processes on
    grid/workers.db, then the same comparison in one process. bp's size is matched to
    PhyLL's on each seed, so its runs wait for PhyLL's."""
    (workers, one) = _page_commands("--workers 2 --out grid")
    assert workers[0] == one[0] == "pnn" and "--workers" not in one
    monkeypatch.chdir(tmp_path)
    assert main([*one[1:], *SHRINK]) == 0
    assert main([*workers[1:], *SHRINK]) == 0
    _assert_same_records(_records(tmp_path / "grid"), _records(tmp_path / "grid-one"),
                         workers=2)
    # every job claimed once: one trial each, completed
    jobs = _trials_by_job(f"sqlite:///{tmp_path / 'grid' / 'workers.db'}")
    assert jobs == {f"run/{m}/{s}": ["COMPLETE"] for m in ("phyll", "bp") for s in (0, 1)}


def test_a_killed_workers_job_runs_again_once_and_the_records_are_the_same(tmp_path):
    """A launch with one worker dies (SIGKILL) after the first trial of bp's tuning study; a
    second launch on the same storage fails that job at once (its process is gone), runs it
    again from its first trial, and finishes: its records, tuned configurations and tuning
    curves equal those of one uninterrupted process."""
    assert main([*TUNED, "--out", str(tmp_path / "one")]) == 0
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    launch = [*TUNED, "--workers", "1", "--storage", url]
    killed = subprocess.run([sys.executable, "-m", "pnn", *launch, "--out",
                             str(tmp_path / "a")], env={**os.environ, KILL_ENV: "tune/bp"},
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "tune/bp: trial 0" in killed.stderr
    before = _trials_by_job(url)
    assert before["tune/bp"] == ["RUNNING"] and before["run/bp/0"] == ["WAITING"]
    assert main([*launch, "--out", str(tmp_path / "b")]) == 0
    jobs = _trials_by_job(url)
    assert jobs.pop("tune/bp") == ["FAIL", "COMPLETE"]  # run again, exactly once
    assert jobs == {"run/bp/0": ["COMPLETE"], "run/bp/1": ["COMPLETE"]}
    _assert_same_records(_records(tmp_path / "b"), _records(tmp_path / "one"), workers=1,
                         storage=url)
    got, want = (json.loads((tmp_path / d / "tuned_configs.json").read_text())
                 for d in ("b", "one"))
    for m in want:
        assert {**got[m], "storage": None} == {**want[m], "storage": None}
    assert got["bp"]["n_complete"] == 2 and len(got["bp"]["curve"]["trial"]) == 2
    assert (tmp_path / "b" / "tuning_curves.png").stat().st_size > 0


def test_the_jobs_and_what_they_wait_for():
    exp = Experiment.from_dict({"kind": "compare", "methods": ["bp", "phyll", "linear"],
                                "seeds": [3, 4], "compare": {"tune_trials": 2}}, where="t")
    jobs = {j.key: j.needs for j in plan(exp)}
    # the one-process order: physical methods first, a method's tuning before its runs
    assert list(jobs) == ["tune/phyll", "run/phyll/3", "run/phyll/4",
                          "tune/bp", "run/bp/3", "run/bp/4",
                          "tune/linear", "run/linear/3", "run/linear/4"]
    assert jobs["tune/bp"] == ("run/phyll/3",)  # its size is PhyLL's on the first seed
    assert jobs["run/bp/4"] == ("tune/bp", "run/phyll/4")
    assert jobs["run/linear/3"] == ("tune/linear",) and jobs["tune/phyll"] == ()
    # launches with other workers, storage or output join the same study; other settings not
    same = Experiment.from_dict({**exp.to_dict(), "compare": {
        "tune_trials": 2, "workers": 3, "storage": "postgresql://u@h/db"},
        "output": {"out": "elsewhere"}}, where="t")
    other = Experiment.from_dict({**exp.to_dict(), "seeds": [3]}, where="t")
    assert study_name(same) == study_name(exp) != study_name(other)


@pytest.mark.parametrize("compare, match", [
    ({"workers": 0}, r"\[compare\] workers = 0: expected an integer >= 1"),
    ({"workers": 1000}, r"workers = 1000: expected at most 256 local worker processes"),
    ({"storage": "runs/tune.journal"},
     r"storage = 'runs/tune.journal': expected an Optuna RDB storage URL"),
    ({"workers": 2, "tune_trials": 2, "tune_storage": "t.journal"},
     r"tune_storage = 't.journal' with workers: the tuning studies live in the workers' "
     r"storage"),
])
def test_bad_worker_settings_are_refused_naming_the_fix(compare, match):
    with pytest.raises(ConfigError, match=match):
        Experiment.from_dict({"kind": "compare", "methods": ["bp"], "compare": compare},
                             where="exp.toml")


def test_the_command_line_refuses_a_bad_worker_count(capsys):
    assert main(["compare", "--methods", "bp", "--workers", "0"]) == 2
    assert "workers = 0: expected an integer >= 1" in capsys.readouterr().err


def test_the_slurm_script_is_valid_bash_and_its_command_runs(tmp_path, monkeypatch, capsys):
    """docs/cluster.md's SLURM array script: ``bash -n`` accepts it (no cluster here), and its
    pnn command, with the variables SLURM and the reader set, is accepted by pnn's parser and
    builds a valid experiment (``--print``: the experiment as it would run)."""
    (block,) = [b for b in blocks(PAGE) if "#SBATCH" in b.text]
    script = tmp_path / "grid.sbatch"
    script.write_text(block.text, encoding="utf-8")
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert re.search(r"^#SBATCH --array=\d+-\d+$", block.text, re.M)
    (command,) = [c for c in block.commands() if "pnn " in c]
    env = {"PNN_DB": "postgresql://pnn:secret@db.cluster/pnn", "SLURM_ARRAY_TASK_ID": "3"}
    words = [re.sub(r"\$(\w+)", lambda m: env[m.group(1)], w) for w in shlex.split(command)]
    assert Path(words[0]).name == "pnn"
    args = build_parser().parse_args(words[1:])
    assert args.out == "grid/task-3"
    monkeypatch.chdir(ROOT)
    assert main([*words[1:], "--print"]) == 0
    printed = capsys.readouterr().out
    assert 'workers = 2' in printed and 'storage = "postgresql://pnn:secret@db.cluster/pnn"' \
        in printed
