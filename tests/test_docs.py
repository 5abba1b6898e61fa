"""Every example of README.md and docs/*.md is run by a test: the README tour in order in a
fresh copy of the repository (its ``pnn run`` then ``pnn report --check``), the Python blocks,
the documented workflows, the emulator sessions of docs/hardware.md as written, every profile
block loaded, and every inline command parsed by the program it names.

Each example is claimed by exactly one entry of :data:`CLAIMS` (or by the rule for inline
commands), so a new block or command on a page fails :func:`test_every_example_is_claimed`
until it is run somewhere. Budgets are cut (epochs, seeds) by the ``shrink`` of its claim: a
visible, per-example list of substitutions; nothing else of a command is changed."""

from __future__ import annotations

import argparse
import json
import os
import re
import queue
import runpy
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from pnn.cli import build_parser, main
from tests.docs_examples import ROOT, Example, blocks, examples, inline_commands


@dataclass(frozen=True)
class Claim:
    """How the examples of ``page`` whose text matches ``match`` (a regex) are run.

    ``how``: ``tour`` (the shell commands in order, in a copy of the repository), ``script``
    (a command that times a machine: parsed by the script's own parser, as inline commands
    are), ``python``
    (the code executed), ``session-scpi`` / ``session-serial`` (docs/hardware.md's emulator
    sessions), ``profile`` (an instrument profile, loaded), ``snippet`` (a fragment that needs
    the user's instrument: compiled and its imports resolved), ``output`` (what a command
    prints, checked by the claim that runs the command, named in ``where``), ``elsewhere`` (run
    as written by the test named in ``where``), ``make`` (Makefile targets, run by CI).
    ``shrink``: (regex, replacement) pairs applied to the example's text before it runs."""

    page: str
    match: str
    how: str
    where: str = ""
    shrink: tuple[tuple[str, str], ...] = ()

    def claims(self, ex: Example) -> bool:
        return ex.page == self.page and re.search(self.match, ex.text) is not None

    def shrunk(self, text: str) -> str:
        for pattern, repl in self.shrink:
            text, n = re.subn(pattern, repl, text)
            assert n, f"the shrink {pattern!r} of {self.page} no longer applies: update CLAIMS"
        return text


EPOCHS_1 = (r"--epochs \d+", "--epochs 1")
CLAIMS = (
    Claim("README.md", r"^make demo", "make"),  # test_the_readme_make_commands
    Claim("README.md", r"pnn train --system acoustic --task vowels --method phyll --epochs 12",
          "tour", shrink=(EPOCHS_1, (r"--method bp", "--method bp --epochs 2"),
                          (r"(run experiments/\S+)", r"\1 --set method.epochs=1"))),
    Claim("README.md", r"^from pnn import registry", "python",
          shrink=((r"epochs=12", "epochs=1"),)),
    Claim("docs/cluster.md", r"--workers 2 --out grid", "elsewhere",
          "tests/test_workers.py::test_two_workers_on_one_sqlite_storage_give_the_one_process_records"),
    Claim("docs/cluster.md", r"--workers 4 --storage postgresql", "script"),
    Claim("docs/cluster.md", r"#SBATCH", "elsewhere",
          "tests/test_workers.py::test_the_slurm_script_is_valid_bash_and_its_command_runs"),
    Claim("docs/byo-physics.md", r".", "elsewhere",
          "tests/test_layers.py::test_readme_bring_your_own_physics_examples_run"),
    Claim("docs/characterize.md", r".", "elsewhere",
          "tests/test_characterize.py::test_the_docs_commands_and_code_run"),
    Claim("docs/hardware.md", r"192\.168\.0\.17", "snippet"),
    Claim("docs/hardware.md", r"^\[profile\]", "profile"),
    Claim("docs/hardware.md", r"^\$ pnn emulate --kind scpi |^\$ pnn instruments|"
          r"^\$ pnn train --method phyll --hidden 8|^pnn emulate: interrupted", "session-scpi",
          shrink=((r"--epochs 2", "--epochs 1"),)),
    Claim("docs/hardware.md", r"ReplyFormatError", "output",
          "tests/drivers/test_visa_sim.py::test_shape_mismatch_is_refused"),
    Claim("docs/hardware.md", r"hil_train|hil, _ = phyll\.train", "elsewhere",
          "tests/drivers/test_hil_phyll.py::test_the_hardware_page_training_script_runs_as_written"),
    Claim("docs/hardware.md", r"--kind serial|SerialLayer|serial_check", "session-serial"),
    Claim("docs/hardware.md", r"sim_echo\.toml", "elsewhere",
          "tests/drivers/test_visa_sim.py::test_the_documented_pyvisa_sim_profile_trains_end_to_end"),
    Claim("docs/paper.md", r"--preset paper --system acoustic", "elsewhere",
          "tests/train/test_blocks.py::test_the_documented_preset_command_runs"),
    Claim("docs/workflows.md", r"pnn compare --system acoustic --task vowels --seeds 3", "tour",
          shrink=((r"--seeds 3", "--seeds 2 --epochs 1 --methods phyll,linear"),
                  (r"(--perturb '[^']*')", r"\1 --epochs 1"),
                  (r"jump:epoch=6\.5", "jump:epoch=0.5"),
                  (r"(pnn adapt .*--out adapt)", r"\1 --epochs 1 --methods phyll"))),
    Claim("docs/workflows.md", r"pnn tune --system acoustic", "elsewhere",
          "tests/test_tune.py::test_the_documented_tune_then_train_block_runs"),
    Claim("docs/workflows.md", r"--checkpoint-dir runs/a", "tour",
          shrink=((r"--epochs 30", "--epochs 2"), (r"--checkpoint-every 20", "--checkpoint-every 1"))),
    Claim("docs/workflows.md", r"device_count=2 \.venv/bin/pnn train", "elsewhere",
          "tests/test_devices.py::test_train_on_two_cpu_devices_gives_the_one_device_run"),
    Claim("docs/workflows.md", r"PNN_COORDINATOR=", "elsewhere",
          "tests/test_distributed.py::test_the_documented_launch_is_what_pnn_reads"),
    Claim("docs/workflows.md", r"benchmarks/sharded_batch\.py", "script"),
)


def _claims_of(ex: Example) -> list[Claim]:
    return [c for c in CLAIMS if c.claims(ex)]


def _block_examples() -> list[Example]:
    return [e for e in examples() if e.lang != "inline"]


# ----------------------------------------------------------------------------- coverage
def test_every_example_is_claimed():
    """Every fenced block of every page is run by exactly one claim, and every claim still
    runs something: a block added to a page without a way to run it fails here."""
    unclaimed = [e.id for e in _block_examples() if not _claims_of(e)]
    assert not unclaimed, f"blocks no test runs (add a Claim to tests/test_docs.py): {unclaimed}"
    twice = [e.id for e in _block_examples() if len(_claims_of(e)) > 1]
    assert not twice, f"blocks claimed twice: {twice}"
    stale = [c for c in CLAIMS if not any(c.claims(e) for e in _block_examples())]
    assert not stale, f"claims that match no block any more: {stale}"


@pytest.mark.parametrize("claim", [c for c in CLAIMS if c.how in ("elsewhere", "output")],
                         ids=lambda c: c.where.split("::")[-1])
def test_the_tests_named_elsewhere_exist_and_read_the_page(claim):
    """A block run by another test: that test exists, and its module reads the page (so that
    it runs the page's text, not a copy)."""
    path, name = claim.where.split("::")
    source = (ROOT / path).read_text(encoding="utf-8")
    m = re.search(rf"^def {re.escape(name)}\(.*?(?=^def |\Z)", source, re.S | re.M)
    assert m, f"{claim.where} does not exist"
    if claim.how == "elsewhere":
        assert Path(claim.page).name in source, f"{path} does not read {claim.page}"
    else:  # the test checks the output the page shows
        assert re.search(claim.match, m.group(0)), f"{claim.where} does not check {claim.match}"


# ----------------------------------------------------------------------------- helpers
def _argv(command: str) -> tuple[dict[str, str], list[str]]:
    """``ENV=1 .venv/bin/pnn train …`` -> ({"ENV": "1"}, ["pnn", "train", …]); ``python -m
    pnn X`` is ``pnn X``."""
    words = shlex.split(command)
    env = {}
    while "=" in words[0] and not words[0].startswith(("-", "/", ".")):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    program = Path(words[0]).name
    if program.startswith("python") and words[1:3] == ["-m", "pnn"]:
        return env, ["pnn", *words[3:]]
    return env, [program, *words[1:]]


def _pnn(argv: list[str], capsys) -> str:
    """Run ``pnn argv`` in this process; fails with what it printed unless it succeeds."""
    try:
        rc = main(argv)
    except SystemExit as e:  # --help, --version
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 0, f"pnn {shlex.join(argv)} exited {rc}:\n{err}"
    return out


def _repo_copy(tmp_path: Path) -> Path:
    """A copy of the repository (its tracked content, no virtualenv or caches) beside a link to
    ../shared, as a fresh clone would sit in CI."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", ".pytest_cache", "*.egg-info", "build", ".ipynb_checkpoints"))
    if (ROOT.parent / "shared").is_dir():
        (tmp_path / "shared").symlink_to(ROOT.parent / "shared")
    return repo


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# ----------------------------------------------------------------------------- the runs
@pytest.mark.parametrize("claim", [c for c in CLAIMS if c.how == "tour"],
                         ids=lambda c: f"{c.page}:{c.match[:30]}")
def test_the_documented_command_blocks_run_in_order(claim, tmp_path, monkeypatch, capsys):
    """A block of commands, run in order in a fresh copy of the repository, each exiting 0;
    the committed records are left as they were (the README tour's ``pnn run`` writes to its
    ``--out``, and ``pnn report --check`` then passes)."""
    (ex,) = [e for e in _block_examples() if claim.claims(e)]
    repo = _repo_copy(tmp_path)
    monkeypatch.chdir(repo)
    committed = _tree(repo / "experiments" / "results")
    for command in claim.shrunk("\n".join(ex.commands())).splitlines():
        env, argv = _argv(command)
        assert not env, f"{command}: needs its own process (a claim of its own)"
        assert argv[0] == "pnn", f"{command}: not a pnn command"
        _pnn(argv[1:], capsys)
    assert _tree(repo / "experiments" / "results") == committed


def test_the_readme_python_block_runs(capsys):
    (claim,) = [c for c in CLAIMS if c.page == "README.md" and c.how == "python"]
    (ex,) = [e for e in blocks("README.md", "python") if claim.claims(e)]
    ns: dict = {}
    exec(compile(claim.shrunk(ex.text), "README.md (python)", "exec"), ns)
    val, test, cost = map(float, [ns["record"]["val_accuracy"], ns["record"]["test_accuracy"],
                                  ns["record"]["cost"]["physical_queries"]])
    assert 0 <= val <= 1 and 0 <= test <= 1 and cost > 0
    assert ns["labels"].shape == (len(ns["data"].x_test),)


def test_the_profile_blocks_load(tmp_path):
    """Every instrument profile shown on docs/hardware.md is a valid profile."""
    from pnn.drivers.profile import load_profile

    shown = [e for e in blocks("docs/hardware.md", "toml") if e.text.startswith("[profile]")]
    assert len(shown) >= 2
    for ex in shown:
        path = tmp_path / f"profile_{ex.line}.toml"
        path.write_text(ex.text, encoding="utf-8")
        assert load_profile(path).name


def test_the_instrument_snippet_compiles_and_its_names_exist():
    """The first block of docs/hardware.md needs the reader's instrument at 192.168.0.17: it
    compiles, and every name it imports exists."""
    (ex,) = [e for e in blocks("docs/hardware.md", "python") if "192.168.0.17" in e.text]
    tree = compile(ex.text, "docs/hardware.md", "exec", flags=0x400)  # ast.PyCF_ONLY_AST
    import importlib

    for node in tree.body:
        if node.__class__.__name__ == "ImportFrom":
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module}.{alias.name}"
    assert "phyll.train(" in ex.text and "record, model" in ex.text


def test_the_readme_make_commands(tmp_path, monkeypatch, capsys):
    """The README's two commands: ``make test`` is what CI's .ci/run runs on a clean clone;
    ``make demo``'s recipe runs here as the Makefile writes it, with one epoch, and leaves
    the record, the model and the figure the README names."""
    (ex,) = [e for e in blocks("README.md", "bash") if e.text.startswith("make demo")]
    assert [c.split()[:2] for c in ex.commands()] == [["make", "demo"], ["make", "test"]]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test:.*\n\t.*pytest", makefile, re.M)
    assert re.search(r"^\s*make test\s*$", (ROOT / ".ci" / "run").read_text(), re.M)
    (recipe,) = re.findall(r"^demo:.*\n\t\$\(BIN\)/(pnn demo .*)$", makefile, re.M)
    monkeypatch.chdir(tmp_path)
    _pnn(shlex.split(recipe)[1:] + ["--epochs", "1"], capsys)
    out = tmp_path / "demo_results"
    records = json.loads((out / "results.json").read_text())
    assert set(records) == {"phyll", "linear", "mlp"}
    assert records["mlp"]["n_trainable_params"] <= records["phyll"]["n_trainable_params"] + 10
    assert (out / "model.pnn").stat().st_size > 0 and (out / "learning_curve.png").stat().st_size


# ----------------------------------------------------------------------------- hardware.md
class _Emulator:
    """``pnn emulate …`` as the page runs it, in its own process (it serves until Ctrl-C):
    started, read up to its ``resource:`` line (the event that says it serves), and stopped
    with SIGINT, which makes it print its summary."""

    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "pnn", *argv], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "JAX_PLATFORMS": "cpu"})
        self.head = []
        lines: queue.Queue = queue.Queue()  # a reader thread: a line, or None at the end
        threading.Thread(target=lambda: [lines.put(ln) for ln in iter(
            self.proc.stdout.readline, "")] + [lines.put(None)], daemon=True).start()
        while True:  # ends on the announcement or the process's end; 300 s bounds a failure
            try:
                line = lines.get(timeout=300)
            except queue.Empty:
                break
            if line is None:
                break
            self.head.append(line.rstrip("\n"))
            if line.startswith("serving for at most"):
                break
        self.rest = lines
        resource = [ln for ln in self.head if ln.startswith("resource: ")]
        if not resource:
            self.proc.kill()
            raise AssertionError(f"pnn emulate did not start:\n{self.proc.stderr.read()}")
        self.resource = resource[0].split(": ", 1)[1]

    def stop(self) -> tuple[str, str]:
        """SIGINT, then what it printed after its announcement (stdout) and its stderr."""
        self.proc.send_signal(signal.SIGINT)
        err = self.proc.stderr.read()
        self.proc.wait(timeout=120)
        assert self.proc.returncode == 0, err
        out = []
        while (line := self.rest.get(timeout=120)) is not None:
            out.append(line)
        return "".join(out), err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _console(page: str, claim_how: str) -> list[Example]:
    (claim,) = [c for c in CLAIMS if c.page == page and c.how == claim_how]
    return claim, [e for e in blocks(page) if claim.claims(e)]


def test_the_scpi_emulator_session_runs_as_shown(tmp_path, monkeypatch, capsys):
    """docs/hardware.md's SCPI session: ``pnn emulate`` (on a free port instead of 5025, the
    one change), ``pnn instruments`` and ``pnn train --instrument`` against it, then Ctrl-C:
    each prints what the page shows."""
    claim, (start, ident, train, stop) = _console("docs/hardware.md", "session-scpi")
    documented = "TCPIP::127.0.0.1::5025::SOCKET"
    (command,) = start.commands()
    _, argv = _argv(command.replace("--port 5025", "--port 0"))
    emu = _Emulator(argv[1:])
    try:
        assert emu.head[0] == start.output().splitlines()[0]
        monkeypatch.chdir(tmp_path)
        (command,) = ident.commands()
        out = _pnn(_argv(command.replace(documented, emu.resource))[1][1:], capsys)
        shown = ident.output().split()[1]
        assert shown in out, out
        (command,) = train.commands()
        out = _pnn(_argv(claim.shrunk(command).replace(documented, emu.resource))[1][1:], capsys)
        assert out.startswith(train.output().split(":")[0] + ":"), out
        assert "result record written to hw.json" in out
        rec = json.loads((tmp_path / "hw.json").read_text())
        assert rec["cost"]["physical_queries"] > 0
        out, err = emu.stop()
    finally:
        emu.kill()
    first, second = stop.output().splitlines()
    assert first in err, err
    assert out.splitlines()[-1].startswith(second.split(" requests")[0].rsplit(" ", 1)[0]), out
    assert out.splitlines()[-1].endswith("output off"), out


def test_the_serial_emulator_session_runs_as_shown(tmp_path, monkeypatch, capsys):
    """docs/hardware.md's serial session: ``pnn emulate --kind serial`` with its garbage and
    corrupt replies, ``serial_check.py`` written from the page and run on the pseudo-terminal
    the emulator prints: the same lines the page shows, the simulator's numbers exactly."""
    _, (start, script, run) = _console("docs/hardware.md", "session-serial")
    (command,) = start.commands()
    emu = _Emulator(_argv(command)[1][1:])
    try:
        assert emu.head[0] == start.output().splitlines()[0]
        (tmp_path / "serial_check.py").write_text(script.text, encoding="utf-8")
        monkeypatch.chdir(tmp_path)
        (command,) = run.commands()
        _, argv = _argv(command.replace("/dev/pts/0", emu.resource))
        assert argv[0].startswith("python")
        monkeypatch.setattr(sys, "argv", argv[1:])
        runpy.run_path(argv[1], run_name="__main__")
        out = capsys.readouterr().out
        emu.stop()
    finally:
        emu.kill()
    # the page's lines; a reply that timed out on a loaded machine would add retries and frames,
    # so the counts are compared as at least those shown (exactly them on a quiet machine)
    shown, got = run.output().splitlines(), out.splitlines()
    assert len(got) == len(shown) and got[-1] == shown[-1] == "identical to the simulator: True"
    for want, line in zip(shown[:-1], got[:-1]):
        pattern = re.escape(want)
        for number in set(re.findall(r"\d+", want)):
            pattern = re.sub(rf"(?<![\w-]){number}(?![\w-])", r"(\\d+)", pattern)
        m = re.fullmatch(pattern, line)
        assert m, (line, want)
        counts = zip(re.findall(r"(?<==)\d+", line), re.findall(r"(?<==)\d+", want))
        assert all(int(g) >= int(w) for g, w in counts), (line, want)


# ----------------------------------------------------------------------------- inline
class _Parsed(Exception):
    """Raised by the patched ``ArgumentParser.parse_args`` once the arguments parsed."""


def _placeholder(word: str) -> bool:
    """``N``, ``DIR``, ``RECORD.json``, ``visa:SOURCE+RECEIVER``, ``recorded:…``,
    ``optical|microwave``: a word the reader replaces."""
    return ("…" in word or "|" in word or re.search(r"(^|[:=])[A-Z][A-Z+_]*\b", word) is not None
            or re.search(r"(^|[:=])my[-_]", word) is not None)  # my-rig, my_rig.npz: the reader's


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0 and not isinstance(action, (argparse._HelpAction,
                                                         argparse._VersionAction))


def _subparser(name: str) -> argparse.ArgumentParser:
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert name in sub.choices, f"pnn has no command {name!r}"
    return sub.choices[name]


INLINE = [e for page in ("README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob(
    "*.md"))) for e in inline_commands(page)]


@pytest.mark.parametrize("ex", INLINE, ids=lambda e: f"{e.id} {e.text[:40]}")
def test_every_inline_command_is_one_its_program_accepts(ex, monkeypatch, capsys):
    """An inline command is parsed by the program it names: ``pnn`` commands by pnn's parser
    (a command written with a placeholder, e.g. ``--tune N``, has its options checked by
    name), scripts by their own parser (a script without options is compiled), ``make``
    targets looked up in the Makefile, a bare program name is only a name."""
    _accepted(ex, ex.text, monkeypatch, capsys)


@pytest.mark.parametrize("claim", [c for c in CLAIMS if c.how == "script"],
                         ids=lambda c: f"{c.page}:{c.match[:30]}")
def test_the_script_blocks_parse(claim, monkeypatch, capsys):
    for ex in [e for e in _block_examples() if claim.claims(e)]:
        for command in ex.commands():
            _accepted(ex, command, monkeypatch, capsys)


def _accepted(ex: Example, command: str, monkeypatch, capsys) -> None:
    """Fails unless the program ``command`` names accepts it (see the test above)."""
    env, argv = _argv(command)
    program, args = argv[0], argv[1:]
    if program == "make":
        for target in args:
            assert re.search(rf"^{target}:", (ROOT / "Makefile").read_text(), re.M), target
    elif not args:
        assert program in ("pnn", "python", "python3"), command
    elif program == "pnn":
        if args[0].startswith("-"):
            with pytest.raises(SystemExit) as e:
                build_parser().parse_args(args)
            assert e.value.code == 0
            return
        sub = _subparser(args[0])
        actions = sub._option_string_actions
        named_only = any(  # `pnn compare --out`: an option named, its value left to the reader
            w.startswith("--") and w in actions and _takes_value(actions[w])
            and (i + 1 == len(args) or args[i + 1].startswith("--")) for i, w in enumerate(args))
        if len(args) == 1 or named_only or any(_placeholder(w) for w in args[1:]):
            for word in args[1:]:
                if word.startswith("--"):
                    assert word.split("=")[0] in actions, (ex.id, word)
            return
        try:
            build_parser().parse_args(args)
        except SystemExit as e:  # --help exits 0
            assert e.code == 0, f"{ex.id}: {command}: {capsys.readouterr().err}"
    else:
        assert program.startswith("python") and args[0].endswith(".py"), command
        script = ROOT / args[0]
        source = script.read_text(encoding="utf-8")
        compile(source, str(script), "exec")
        if "argparse" not in source:
            assert len(args) == 1, f"{command}: {args[0]} takes no options"
            return
        original = argparse.ArgumentParser.parse_args

        def parse_args(self, a=None, namespace=None):
            raise _Parsed(original(self, a, namespace))

        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
        monkeypatch.setattr(sys, "argv", args)
        monkeypatch.chdir(ROOT)
        with pytest.raises(_Parsed):
            runpy.run_path(str(script), run_name="__main__")
