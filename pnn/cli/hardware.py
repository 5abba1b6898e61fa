"""``pnn instruments`` and ``pnn emulate``: the hardware commands, added to pnn's CLI.

:func:`add_commands` is called by :func:`pnn.cli.build_parser`. Heavy imports (pyvisa, the
simulators) happen only when a command runs, so ``pnn --help`` stays fast.
"""

from __future__ import annotations

import argparse
import codecs
import signal
import sys
import threading
import warnings

__all__ = ["add_commands", "cmd_instruments", "cmd_emulate"]


def _escaped(text: str) -> str:
    """Accept terminations typed as escapes on the command line: ``\\n``, ``\\r\\n``."""
    return codecs.decode(text, "unicode_escape")


def _error_spec(text: str) -> tuple:
    """``HEADER:CODE:MESSAGE``; headers contain colons themselves, so split from the right."""
    parts = text.rsplit(":", 2)
    try:
        prefix, code, message = parts
        return prefix, int(code), message
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HEADER:CODE:MESSAGE such as 'WAV:DATA:-222:Data out of range', "
            f"got {text!r}") from None


def _port(text: str) -> int:
    """A TCP port number, 0 (any free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected a TCP port from 0 (any free one) to 65535, got {text!r}")
    return port


def add_commands(subparsers) -> None:
    from pnn.cli.common import seed as seed_arg

    """Add ``instruments`` and ``emulate`` to pnn's sub-command parser."""
    from pnn import registry

    i = subparsers.add_parser(
        "instruments", help="list VISA resources and what each answers to *IDN?",
        description="List the VISA resources the backend finds (pyvisa-py by default) and query "
                    "each one's identity. A resource that does not answer is reported, not "
                    "fatal. Raw-socket instruments (TCPIP::host::port::SOCKET) cannot be "
                    "discovered: name them with --resource.")
    i.add_argument("--backend", default="@py",
                   help="pyvisa backend: '@py' (pyvisa-py, default) or '@ivi' (NI-VISA)")
    i.add_argument("--resource", action="append", default=[], metavar="ADDRESS",
                   help="also query this address (repeatable)")
    i.add_argument("--no-scan", action="store_true", help="query only the --resource addresses")
    i.add_argument("--timeout-ms", type=int, default=2000,
                   help="open and read timeout per resource (default %(default)s)")
    i.add_argument("--query", default="*IDN?", help="identity query (default %(default)s)")
    i.add_argument("--read-termination", type=_escaped, default="\n",
                   help="read termination, escapes allowed (default '\\n')")
    i.add_argument("--write-termination", type=_escaped, default="\n",
                   help="write termination, escapes allowed (default '\\n')")
    i.set_defaults(func=cmd_instruments)

    e = subparsers.add_parser(
        "emulate", help="serve a virtual instrument on loopback, backed by a simulator",
        description="Serve a virtual instrument backed by a pnn simulator: a SCPI AWG + "
                    "digitiser on a TCP socket of 127.0.0.1, or a microcontroller speaking pnn's "
                    "serial protocol on a pseudo-terminal. Prints the address to use and serves "
                    "until --max-seconds or --max-requests, or Ctrl-C. It speaks the commands "
                    "of the shipped profile 'emulator' (drivers/profiles/emulator.toml).")
    e.add_argument("--kind", choices=["scpi", "serial", "scpi-pair"], default="scpi",
                   help="scpi: one TCPIP socket; serial: pseudo-terminal; scpi-pair: a virtual "
                        "AWG and a virtual two-channel scope on two sockets (ascii traces in "
                        "raw codes, scaled by each channel's preamble), speaking the shipped "
                        "profile 'emulator_pair'; n-out must be even (default %(default)s)")
    e.add_argument("--system", default="acoustic",
                   choices=sorted(registry.SYSTEMS),
                   help="simulator behind it (default %(default)s)")
    e.add_argument("--n-in", type=int, default=8, help="drive channels (default %(default)s)")
    e.add_argument("--n-out", type=int, default=8, help="measured channels (default %(default)s)")
    e.add_argument("--seed", type=seed_arg, default=0,
                   help="simulator seed (default %(default)s)")
    e.add_argument("--port", type=_port, default=0,
                   help="scpi: TCP port on 127.0.0.1, 0 for any free one; scpi-pair: the AWG's "
                        "port, the scope's is the next one (default %(default)s)")
    e.add_argument("--max-seconds", type=float, default=3600.0,
                   help="stop after this long (default %(default)s)")
    e.add_argument("--max-requests", type=int, default=1_000_000,
                   help="stop after this many requests (default %(default)s)")
    f = e.add_argument_group("fault injection (off by default)")
    f.add_argument("--delay", type=float, default=0.0, help="seconds before every reply")
    f.add_argument("--drop-after", type=int, default=None,
                   help="drop the link on the request after this many")
    f.add_argument("--drops", type=int, default=1, help="how many times to drop (default 1)")
    f.add_argument("--drop-reply", action="store_true",
                   help="when dropping, execute the request first (its reply is lost)")
    f.add_argument("--garbage-replies", type=int, default=0,
                   help="the first N replies are garbage (serial: junk bytes before the frame)")
    f.add_argument("--corrupt-replies", type=int, default=0,
                   help="serial: the first N replies carry a wrong checksum")
    f.add_argument("--short-trace", action="store_true",
                   help="scpi: FETC? returns one value too few")
    f.add_argument("--error", type=_error_spec, action="append", default=[],
                   metavar="HEADER:CODE:MESSAGE",
                   help="scpi: push this error whenever HEADER arrives; serial: answer requests "
                        "named HEADER (e.g. MEASURE) with an error frame (repeatable)")
    e.set_defaults(func=cmd_emulate)


def cmd_instruments(args) -> int:
    try:
        import pyvisa
    except ImportError:
        print("pnn instruments: error: pyvisa is not installed; pip install 'pnn[hardware]'",
              file=sys.stderr)
        return 2
    try:
        rm = pyvisa.ResourceManager(args.backend)
    except Exception as e:
        print(f"pnn instruments: error: cannot load VISA backend {args.backend!r}: {e}",
              file=sys.stderr)
        return 2
    try:
        found: list[str] = []
        if not args.no_scan:
            try:
                with warnings.catch_warnings():
                    # pyvisa-py's hints about optional discovery packages (psutil, zeroconf)
                    warnings.simplefilter("ignore", UserWarning)
                    found = list(rm.list_resources())
            except Exception as e:  # one broken interface must not hide the others
                print(f"discovery failed ({type(e).__name__}: {e}); querying --resource only",
                      file=sys.stderr)
        resources = found + [r for r in args.resource if r not in found]
        if not resources:
            print(f"no VISA resources found with backend {args.backend!r}. Raw-socket "
                  f"instruments cannot be discovered: pass --resource "
                  f"TCPIP::<host>::<port>::SOCKET")
            return 0
        width = max(len(r) for r in resources)
        for r in resources:
            print(f"{r:<{width}}  {_identify(rm, r, args)}", flush=True)
    finally:
        rm.close()
    return 0


def _identify(rm, resource: str, args) -> str:
    res = None
    try:
        res = rm.open_resource(resource, open_timeout=args.timeout_ms, timeout=args.timeout_ms,
                               read_termination=args.read_termination,
                               write_termination=args.write_termination)
        return res.query(args.query).strip() or "(empty reply)"
    except Exception as e:
        return f"(no answer to {args.query}: {type(e).__name__}: {e})"
    finally:
        if res is not None:
            try:
                res.close()
            except Exception:
                pass


class _Pair:
    """A virtual AWG and scope served and stopped together, seen as one emulator: its
    ``resource`` is 'SOURCE+RECEIVER' (the form ``pnn train --instrument visa:...`` takes for a
    two-address profile); its log is the AWG's (the measurements), its requests both."""

    def __init__(self, source, receiver):
        self.source, self.receiver = source, receiver

    def start(self):
        self.source.start()
        try:
            self.receiver.start()
        except BaseException:
            self.source.stop()
            raise
        return self

    def stop(self) -> None:
        self.source.stop()
        self.receiver.stop()

    def wait(self, timeout: float) -> bool:
        """True once either has stopped (a limit reached or a failure)."""
        return self.source.wait(timeout / 2) or self.receiver.wait(timeout / 2)

    @property
    def resource(self) -> str:
        return f"{self.source.resource}+{self.receiver.resource}"

    @property
    def log(self):
        return self.source.log

    @property
    def output_on(self) -> bool:
        return self.source.output_on

    @property
    def error(self):
        return self.source.error or self.receiver.error


def cmd_emulate(args) -> int:
    from pnn.drivers.emulator import Faults, ScpiEmulator, SerialEmulator
    from pnn.drivers.profile import profile_path

    if args.n_in < 1 or args.n_out < 1:
        raise ValueError(f"--n-in and --n-out must be positive, got {args.n_in}, {args.n_out}")
    if args.kind == "serial" and args.port:
        raise ValueError(f"--port {args.port}: a serial emulator serves a pseudo-terminal, whose "
                         f"name it prints; --port is for --kind scpi and scpi-pair")
    faults = Faults(delay_s=args.delay, drop_after=args.drop_after, drops=args.drops,
                    drop_reply=args.drop_reply, garbage_replies=args.garbage_replies,
                    corrupt_replies=args.corrupt_replies, short_trace=args.short_trace,
                    errors=tuple(args.error))
    common = dict(seed=args.seed, faults=faults, max_requests=args.max_requests,
                  max_seconds=args.max_seconds)
    profile = "emulator"
    if args.kind == "scpi":
        emu = ScpiEmulator(args.system, args.n_in, args.n_out, port=args.port, **common)
    elif args.kind == "scpi-pair":
        if args.n_out % 2:
            raise ValueError(f"--kind scpi-pair: --n-out must be even (two scope channels of "
                             f"n_out / 2 features each), got {args.n_out}")
        ports = (args.port, args.port + 1 if args.port else 0)
        if ports[1] > 65535:
            raise ValueError(f"--port {args.port}: the scope needs the next port too; choose "
                             f"at most 65534, or 0 for any free ones")
        # the faults go to the AWG; the scope answers faithfully
        emu = _Pair(*ScpiEmulator.pair(args.system, args.n_in, args.n_out, seed=args.seed,
                                       source_faults=faults, channels=2, raw_codes=True,
                                       ports=ports, max_requests=args.max_requests,
                                       max_seconds=args.max_seconds))
        profile = "emulator_pair"
    else:
        emu = SerialEmulator(args.system, args.n_in, args.n_out, **common)
    # A process started in the background by a non-interactive shell inherits SIGINT ignored,
    # and Python then never raises KeyboardInterrupt: restore Ctrl-C explicitly.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        emu.start()
    except OSError as e:
        if args.kind == "serial":
            raise
        raise ValueError(f"--port {args.port}: cannot listen on 127.0.0.1:{args.port} "
                         f"({e.strerror or e}); choose another port, or 0 for any free one"
                         ) from e
    kind = {"scpi": "SCPI (TCP socket)", "serial": "serial (pseudo-terminal)",
            "scpi-pair": "SCPI AWG + scope (two TCP sockets)"}[args.kind]
    # From here on Ctrl-C is a protocol event: whenever it comes (even while the lines that
    # announce the resource are printed), the emulator is stopped and its summary printed; a
    # caller may send it as soon as it has read the 'resource:' line.
    try:
        print(f"pnn emulate: {kind} emulator of {args.system!r}, n_in={args.n_in}, "
              f"n_out={args.n_out}, seed={args.seed}")
        print(f"resource: {emu.resource}")
        print(f"profile:  {profile_path(profile)}")
        print(f"serving for at most {args.max_seconds:g} s or {args.max_requests} requests; "
              f"Ctrl-C to stop", flush=True)
        while not emu.wait(0.5):
            pass
    except KeyboardInterrupt:
        print("pnn emulate: interrupted", file=sys.stderr)
    finally:
        emu.stop()
    log = emu.log
    print(f"served {log.requests} requests over {log.connections or 1} connection(s); "
          f"{len(log.measurements)} batches, {log.samples_measured} samples measured; "
          f"output {'ON' if emu.output_on else 'off'}", flush=True)
    if emu.error is not None:
        print(f"pnn emulate: error: the server failed: {type(emu.error).__name__}: {emu.error}",
              file=sys.stderr)
        return 1
    return 0
