"""A signal source plus a receiver, spoken to with SCPI through pyvisa, as a physical layer.

:class:`VisaLayer` drives an arbitrary-waveform generator (or any source) with a batch of drive
vectors and reads the response back from a scope or digitiser. Everything instrument-specific (the
SCPI, the encodings, the timeouts and terminations, the safety ceiling) comes from a TOML
instrument profile (:mod:`pnn.drivers.profile`), so connecting other instruments means writing a
profile, not code.

One batch of ``b`` drive vectors (``x``, shape ``(b, n_in)``, drive units) is measured as:

1. ``v = offset + scale * x`` (instrument units), checked by
   :class:`~pnn.drivers.safety.SafetyLimits` (refused or clipped, counted; nothing out of limits is
   sent), encoded as the drive datatype (rounded toward the inside of the limits for integer
   types; a value that would wrap or overflow is refused, see :mod:`pnn.drivers.wire`), split
   into transfers of at most ``max_batch`` and paced to the rate limit (all of this is
   :class:`~pnn.drivers.base.InstrumentLayer`'s);
2. ``before_batch`` commands; ``drive`` + an IEEE 488.2 definite-length binary block of the
   ``b * n_in`` values (sample-major), written with ``write_binary_values`` (or, with
   ``[visa.drive] datatype = "ascii"``, the values as decimal text joined by ``separator``);
   error queue read;
3. ``run`` commands; the ``wait`` query (``*OPC?``) with ``measure_timeout_ms``; error queue read;
4. ``fetch``: ``query_binary_values`` returns a trace of ``b * n_out * points_per_feature``
   values; error queue read; ``after_batch`` commands;
5. the trace is reshaped to ``(b, n_out, points_per_feature)`` and reduced over the last axis
   (``mean``, ``rms``, ...) to ``(b, n_out)``, then mapped by the readout's ``offset + scale * r``.

After every configuration step the error queue (``SYST:ERR?``) is read until it reports 0; any
non-zero entry raises :class:`~pnn.drivers.errors.InstrumentError` with the instrument's messages.

Reliability. A link that fails during a batch (a pyvisa I/O error such as a timeout, or a socket
error) is closed, re-opened (``*IDN?`` and the whole ``setup`` again) and *that* batch is sent
again, at most ``max_retries`` times; batches already measured are never re-sent, so the caller
gets each sample exactly once. Once the batch's data is in hand (the last fetch returned), a
link that fails (at the error check after the fetch, or in ``after_batch``) is re-opened, and
the batch is *not* measured again: the instrument drives and delivers each batch once. With
several ``channels``, a link lost between two channels' fetches loses the data of the channels
still to fetch: that batch is measured again (the instrument measured it twice; the caller, the
driver's counters and the ledger count it once). A reply of the wrong length or format raises
:class:`~pnn.drivers.errors.ReplyFormatError` (never retried: it would hide a misconfiguration) and
drops the session so the next call starts from a clean stream. An instrument that cannot be
reached raises :class:`~pnn.drivers.errors.InstrumentConnectionError` from :meth:`VisaLayer.connect`
within ``open_timeout_ms`` + ``timeout_ms``.

Note: pyvisa-py does not report a TCP peer that closed its socket normally (FIN); such a dropped
link is noticed when the next read times out (a reset connection, RST, fails at once) (``timeout_ms``, or ``measure_timeout_ms`` while waiting for a
measurement), which bounds how long a retry takes to start.
"""

from __future__ import annotations

import dataclasses
import math
import re
import struct

import numpy as np

from pnn.drivers import wire
from pnn.drivers.base import InstrumentLayer, TransientError
from pnn.numtext import parse_float
from pnn.drivers.errors import InstrumentConnectionError, InstrumentError, ReplyFormatError
from pnn.drivers.profile import ASCII, Profile, VisaCommands, format_command
from pnn.drivers.safety import SafetyLimits

__all__ = ["VisaLayer", "parse_error_reply"]

_ERROR_RE = re.compile(r"^\s*([+-]?\d+)\s*(?:,\s*(.*?))?\s*$", re.S)
_MAX_ERROR_READS = 32


def parse_error_reply(reply: str, *, source: str = "instrument") -> tuple[int, str]:
    """Split an error-queue entry such as ``-222,"Data out of range"`` into code and message.

    Raises:
        ReplyFormatError: when the reply does not start with an integer code.
    """
    m = _ERROR_RE.match(reply)
    if m is None:
        raise ReplyFormatError(f"{source}: error-queue reply {reply!r} is not of the form "
                               f"'<code>,\"<message>\"'")
    return int(m.group(1)), (m.group(2) or "").strip().strip('"')


def _pyvisa():
    import pyvisa  # optional (pnn[hardware]): imported when a driver first needs it
    return pyvisa


def _transport_errors() -> tuple:
    pyvisa = _pyvisa()
    return (pyvisa.errors.VisaIOError, pyvisa.errors.InvalidSession, OSError, EOFError)


_REDUCE = {
    "mean": lambda t: t.mean(axis=-1),
    "rms": lambda t: np.sqrt(np.mean(t**2, axis=-1)),
    "mean_square": lambda t: np.mean(t**2, axis=-1),
    "max": lambda t: t.max(axis=-1),
    "min": lambda t: t.min(axis=-1),
    "sum": lambda t: t.sum(axis=-1),
    "none": lambda t: t[..., 0],
}


class VisaLayer(InstrumentLayer):
    """A VISA instrument pair as a :class:`~pnn.layer.PhysicalLayer` (plain Python, not traceable).

    The common path (validation, safety, chunking into ``max_batch``, retries, counters) is
    :class:`~pnn.drivers.base.InstrumentLayer`'s; this class is the wire: SCPI through pyvisa.

    Args:
        profile: a :class:`~pnn.drivers.profile.Profile`, a TOML path, or a shipped profile's name.
        resource: the VISA address, e.g. ``"TCPIP::192.168.0.5::5025::SOCKET"``; default: the
            profile's ``visa.resource``.
        n_in, n_out: the layer's shape; default: the profile's ``[layer]``.
        name: used in every message (default ``"visa:<resource>"``).
        backend: pyvisa backend, default the profile's (``"@py"``: pyvisa-py; ``"@ivi"``: NI).
        resource_manager: an existing ``pyvisa.ResourceManager`` to use (it is not closed by
            :meth:`close`), e.g. a pyvisa-sim one in tests.
        safety: a :class:`~pnn.drivers.safety.SafetyLimits` to use; its ceiling may not be looser
            than the profile's. Default: the profile's ceiling and ``on_violation``.

    No I/O happens here: call :meth:`connect` or use ``with VisaLayer(...) as layer:``.
    Outputs are ``float32`` arrays of shape ``(batch, n_out)``, like the simulators'.

    Raises:
        ValueError: when the profile has no ``[visa]`` table, the shape or the resource is
            missing, or ``safety`` is looser than the profile.
    """

    _section = "visa"
    _kind = "VisaLayer"
    _encoding_key = "[visa.drive]"

    def __init__(self, profile: Profile | str = "emulator", resource=None, *,
                 n_in: int | None = None, n_out: int | None = None, name: str | None = None,
                 backend: str | None = None, resource_manager=None,
                 safety: SafetyLimits | None = None):
        self._v = self._load_settings(profile)
        v = self._v
        if v.two_address:
            if isinstance(resource, str):
                parts = [r.strip() for r in resource.split("+")]
                if len(parts) != 2 or not all(parts):
                    raise ValueError(
                        f"VisaLayer: profile {self.profile.source} describes two instruments "
                        f"([visa.source], [visa.receiver]) but one resource {resource!r} was "
                        f"given; give (source, receiver) addresses, 'SOURCE+RECEIVER' (e.g. "
                        f"pnn train --instrument visa:TCPIP::10.0.0.5::INSTR+TCPIP::10.0.0.6::"
                        f"INSTR), or None for the profile's")
                resource = tuple(parts)
            src, rcv = resource if resource is not None else (None, None)
            self._roles = [
                _Role("source", src or v.source.resource, v.source.idn_contains,
                      v.source.commands, "visa.source.commands"),
                _Role("receiver", rcv or v.receiver.resource, v.receiver.idn_contains,
                      v.receiver.commands, "visa.receiver.commands")]
            self.resource = f"{self._roles[0].resource} + {self._roles[1].resource}"
        else:
            if resource is not None and not isinstance(resource, str):
                raise ValueError(f"VisaLayer: profile {self.profile.source} describes one "
                                 f"instrument; give one resource string, got {resource!r}")
            self.resource = resource or v.resource
            if not self.resource:
                raise ValueError(f"VisaLayer: no VISA resource given and profile "
                                 f"{self.profile.source} sets no visa.resource")
            self._roles = [_Role("instrument", self.resource, v.idn_contains, v.commands,
                                 "visa.commands")]
        self._init_instrument(n_in=n_in, n_out=n_out,
                              name=name or f"visa:{self.resource}", safety=safety)
        chans = v.readout.channels
        if chans and self.spec.n_out % len(chans):
            raise ValueError(f"{self.spec.name}: n_out = {self.spec.n_out} cannot be split over "
                             f"the {len(chans)} channels of visa.readout.channels in "
                             f"{self.profile.source}; each channel carries n_out / channels "
                             f"features")
        self.backend = backend or v.backend
        self._rm_external = resource_manager
        self._rm = None
        self.idns: dict[str, str] = {}

    @property
    def _src(self) -> "_Role":
        return self._roles[0]

    @property
    def _rcv(self) -> "_Role":
        return self._roles[-1]

    @property
    def _res(self):
        """The first instrument's session (the only one on a one-address rig)."""
        return self._roles[0].res

    @property
    def _wire_datatype(self) -> str:
        return self._v.drive.datatype

    # ------------------------------------------------------------------ connection
    def connect(self) -> "VisaLayer":
        """Open the resource(s), check ``*IDN?``, run ``setup`` (each step error-checked), check
        the shape. Returns ``self``.

        Raises:
            InstrumentConnectionError: when a resource cannot be opened or does not answer
                ``*IDN?`` within the timeouts, or its identity does not match the profile.
            InstrumentError: when a setup step leaves an error in the queue.
            ReplyFormatError: when the shape query's reply is malformed or does not match.
        """
        return super().connect()

    def _link_open(self) -> bool:
        return all(r.res is not None for r in self._roles)

    def _resource_manager(self):
        if self._rm_external is not None:
            return self._rm_external
        if self._rm is None:
            try:
                self._rm = _pyvisa().ResourceManager(self.backend)
            except Exception as e:
                raise InstrumentConnectionError(
                    f"{self.spec.name}: cannot load the pyvisa backend {self.backend!r}: {e}. "
                    f"Install pnn[hardware] (pyvisa-py) for '@py', or NI-VISA for '@ivi'"
                ) from e
        return self._rm

    def _open_raw(self, role: "_Role"):
        v = self._v
        rm = self._resource_manager()
        kw = {"baud_rate": v.baud_rate} if v.baud_rate else {}
        try:
            res = rm.open_resource(
                role.resource, open_timeout=v.open_timeout_ms, timeout=v.timeout_ms,
                read_termination=v.read_termination, write_termination=v.write_termination, **kw)
        except Exception as e:
            raise InstrumentConnectionError(
                f"{self.spec.name}: cannot open {role.resource!r} with backend "
                f"{self.backend!r} (open timeout {v.open_timeout_ms} ms): "
                f"{type(e).__name__}: {e}") from e
        return res

    def _open_link(self) -> None:
        done = 0  # instruments whose setup has run
        try:
            for role in self._roles:
                self._open_role(role)
                done += 1
        except InstrumentError as e:
            if done or not isinstance(e, InstrumentConnectionError):
                # a setup step failed, or a later instrument did not connect after an earlier
                # one was set up: setup steps may have switched something on
                self._make_safe_quietly()
            self._discard()
            raise
        except BaseException:
            if done:
                self._make_safe_quietly()
            self._discard()
            raise
        self.idn = " | ".join(self.idns[r.name] for r in self._roles) if len(self._roles) > 1 \
            else self.idns[self._roles[0].name]

    def _open_role(self, role: "_Role") -> None:
        c = role.commands
        role.res = self._open_raw(role)
        try:
            idn = self._query(role, c.idn).strip() if c.idn else ""
        except _transport_errors() as e:
            # pyvisa-py connects lazily: a refused connection surfaces at the first query
            if isinstance(e, OSError) and not isinstance(e, TimeoutError):
                what = f"is unreachable ({type(e).__name__}: {e})"
            else:
                what = (f"did not answer {c.idn!r} within {self._v.timeout_ms} ms "
                        f"({type(e).__name__}: {e})")
            raise InstrumentConnectionError(
                f"{self.spec.name}: {role.resource!r} {what}; check the address, the "
                f"terminations (read {self._v.read_termination!r}, write "
                f"{self._v.write_termination!r}) and that the instrument is on") from e
        key = "visa.idn_contains" if role.name == "instrument" else f"visa.{role.name}.idn_contains"
        if role.idn_contains and role.idn_contains not in idn:
            raise InstrumentConnectionError(
                f"{self.spec.name}: {role.resource!r} identifies as {idn!r}, which lacks "
                f"{role.idn_contains!r} (profile {self.profile.name!r} {key}); refusing to "
                f"drive an instrument the profile was not written for")
        self.idns[role.name] = idn
        tv = self._template()
        try:
            for i, cmd in enumerate(c.setup):
                text = self._format(role, cmd, tv, f"setup[{i}]")
                role.res.write(text)
                self._check_errors(role, text)
            if c.shape:
                self._check_shape(role, self._format(role, c.shape, tv, "shape"))
        except _transport_errors() as e:
            raise InstrumentConnectionError(
                f"{self.spec.name}: link to {role.resource!r} failed during setup: "
                f"{type(e).__name__}: {e}") from e

    def _discard(self) -> None:
        """Forget the sessions without talking to the instruments (the links are suspect)."""
        for role in self._roles:
            res, role.res = role.res, None
            if res is not None:
                try:
                    res.close()
                except Exception:
                    pass

    def close(self) -> None:
        """Send the profile's ``safe`` commands (output off; the source's first), then close, in
        a ``finally``.

        When a session was lost, one fresh session is opened just to send ``safe``.

        Raises:
            InstrumentError: when the safe commands could not be sent (the instrument may not be
                in a safe state: check it by hand); the resources are closed regardless.
        """
        super().close()

    def _make_safe(self, was_connected: bool) -> str | None:
        failures = []
        for role in self._roles:
            safe = role.commands.safe
            if not (safe and (role.res is not None or was_connected)):
                continue
            if role.res is None:
                try:
                    role.res = self._open_raw(role)
                except InstrumentConnectionError as e:
                    failures.append(str(e))
                    continue
            try:
                for i, cmd in enumerate(safe):
                    role.res.write(self._format(role, cmd, self._template(), f"safe[{i}]"))
                # a query makes sure the instrument has processed the safe commands
                self._check_errors(role, "; ".join(safe))
            except Exception as e:
                failures.append(f"{role.resource}: {type(e).__name__}: {e}")
        if not failures:
            return None
        return (f"{self.spec.name}: could not confirm the safe state of {self.resource!r} "
                f"({'; '.join(failures)}); check the instrument's output by hand")

    def _release(self) -> None:
        self._discard()
        if self._rm is not None:
            try:
                self._rm.close()
            except Exception:
                pass
            self._rm = None

    # ------------------------------------------------------------------ SCPI helpers
    def _template(self, batch: int = 0, channel: str | None = None) -> dict:
        t = self.profile.template_values(self.spec.n_in, self.spec.n_out, batch)
        if channel is not None:
            t["channel"] = channel
        return t

    def _format(self, role: "_Role", template: str, values: dict, key: str) -> str:
        """Fill in a command template (already checked at profile load, see
        :func:`pnn.drivers.profile.format_command`)."""
        return format_command(template, values, source=self.profile.source,
                              where=f"{role.key}.{key}")

    def _query(self, role: "_Role", cmd: str, *, timeout_ms: int | None = None) -> str:
        res = role.res
        old = res.timeout
        if timeout_ms is not None:
            res.timeout = timeout_ms
        try:
            return res.query(cmd)
        except UnicodeDecodeError as e:
            raise ReplyFormatError(f"{self.spec.name}: the reply to {cmd!r} is not ASCII text "
                                   f"({e})") from None
        finally:
            if timeout_ms is not None:
                res.timeout = old

    def _check_errors(self, role: "_Role", after: str) -> None:
        """Read the error queue until it reports 0; raise with every non-zero entry."""
        cmd = role.commands.error
        if not cmd:
            return
        entries = []
        for _ in range(_MAX_ERROR_READS):
            code, msg = parse_error_reply(self._query(role, cmd), source=self.spec.name)
            if code == 0:
                break
            entries.append(f'{code},"{msg}"')
        if entries:
            raise InstrumentError(
                f"{self.spec.name}: {role.resource!r} reported {len(entries)} error(s) after "
                f"{_short(after)!r}: {'; '.join(entries)}")

    def _check_shape(self, role: "_Role", cmd: str) -> None:
        reply = self._query(role, cmd).strip()
        try:
            n_in, n_out = (int(p) for p in reply.split(","))
        except ValueError:
            raise ReplyFormatError(f"{self.spec.name}: reply {reply!r} to {cmd!r} is not "
                                   f"'<n_in>,<n_out>'") from None
        if (n_in, n_out) != (self.spec.n_in, self.spec.n_out):
            raise ReplyFormatError(
                f"{self.spec.name}: the instrument has {n_in} inputs and {n_out} outputs, but "
                f"the layer was built for n_in={self.spec.n_in}, n_out={self.spec.n_out}")

    # ------------------------------------------------------------------ measurement
    def to_instrument(self, x) -> np.ndarray:
        """Drive units -> instrument units, ``offset + scale * x`` (float64, exact: the safety
        limits check these values, and rounding for an integer datatype is the encoder's, toward
        the inside of the limits; see :func:`pnn.drivers.wire.encode`)."""
        d = self._v.drive
        return d.offset + d.scale * np.asarray(x, np.float64)

    def _encode(self, values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
        d = self._v.drive
        if d.datatype == ASCII:
            return wire.encode_ascii(values, d.digits, name=self.spec.name,
                                     where=self._encoding_key, bounds=bounds)
        return super()._encode(values, bounds)

    def _batch_limit(self) -> int:
        return self._v.max_batch

    def _max_retries(self) -> int:
        return self._v.max_retries

    def _prepare(self, values: np.ndarray, encoded: np.ndarray):
        return encoded

    def _gave_up(self, n_values: int, tries: int, last) -> Exception:
        return InstrumentConnectionError(
            f"{self.spec.name}: a batch of {n_values} drives to {self.resource!r} failed "
            f"{tries} time(s) in a row (visa.max_retries = {self._v.max_retries}); last "
            f"error: {type(last).__name__}: {last}")

    def _on_bad_reply(self) -> None:
        self._discard()  # the next transfer starts from a clean stream

    def _on_instrument_error(self) -> None:
        self._make_safe_quietly()

    def _make_safe_quietly(self) -> None:
        for role in self._roles:
            if role.res is None:
                continue
            try:
                for i, cmd in enumerate(role.commands.safe):
                    role.res.write(self._format(role, cmd, self._template(), f"safe[{i}]"))
            except Exception:
                self._discard()
                return

    def _exchange(self, encoded: np.ndarray, attempt: int) -> np.ndarray:
        try:
            return self._measure_once(encoded)
        except _transport_errors() as e:
            self._discard()
            raise TransientError(e) from e

    def _write_checked(self, role: "_Role", cmds, tv: dict, key: str) -> None:
        for i, cmd in enumerate(cmds):
            text = self._format(role, cmd, tv, f"{key}[{i}]")
            role.res.write(text)
            self._check_errors(role, text)

    def _measure_once(self, encoded: np.ndarray) -> np.ndarray:
        v = self._v
        src, rcv = self._src, self._rcv
        two = src is not rcv
        b = len(encoded)
        tv = self._template(b)
        self._write_checked(src, src.commands.before_batch, tv, "before_batch")
        head = self._format(src, src.commands.drive, tv, "drive")
        if v.drive.datatype == ASCII:
            src.res.write(head + v.drive.separator.join(encoded.ravel().tolist()))
            self._check_errors(src, head + "<values>")
        else:
            try:
                src.res.write_binary_values(head, encoded.ravel().tolist(),
                                            datatype=v.drive.datatype,
                                            is_big_endian=v.drive.big_endian)
            except UnicodeDecodeError as e:
                # a backend that takes only text (pyvisa-sim) decodes the block and fails
                raise InstrumentError(
                    f"{self.spec.name}: {src.resource!r} (backend {self.backend!r}) could not "
                    f"take the binary block of {wire.describe(v.drive.datatype)} drives: it "
                    f"reads writes as text ({type(e).__name__}: {e}). Nothing was measured; for "
                    f"an instrument or simulator (pyvisa-sim) that takes text, set [visa.drive] "
                    f"datatype = \"ascii\"") from None
            self._check_errors(src, head + "<block>")
        if two:  # arm the receiver before the source's output
            self._write_checked(rcv, rcv.commands.before_batch, tv, "before_batch")
        for role in self._roles:
            for i, cmd in enumerate(role.commands.run):
                role.res.write(self._format(role, cmd, tv, f"run[{i}]"))
        for role in self._roles:
            c = role.commands
            if c.wait:
                wait = self._format(role, c.wait, tv, "wait")
                reply = self._query(role, wait, timeout_ms=v.measure_timeout_ms).strip()
                if c.wait_reply and reply != c.wait_reply:
                    raise ReplyFormatError(f"{self.spec.name}: reply {reply!r} to {c.wait!r}, "
                                           f"expected {c.wait_reply!r}")
        for role in self._roles:
            if role.commands.run:
                self._check_errors(role, "; ".join(role.commands.run))
        r = v.readout
        channels = r.channels or (None,)
        parts = []
        checked = True
        for k, ch in enumerate(channels):
            tvc = self._template(b, ch)
            scaling = self._preamble(rcv, tvc) if r.preamble is not None else None
            fetch = self._format(rcv, rcv.commands.fetch, tvc, "fetch")
            trace = self._fetch(rcv, fetch)
            if k + 1 < len(channels):
                self._check_errors(rcv, fetch)
            else:
                checked = self._check_errors_after_fetch(rcv, fetch)
            if scaling is not None:
                scale, offset, reference = scaling
                trace = (np.asarray(trace, np.float64) - reference) * scale + offset
            parts.append(self.reduce(trace, b, source=fetch, channels=max(1, len(r.channels))))
        if not checked:
            self._reopen_keeping_data()
        return np.concatenate(parts, axis=1)

    def _check_errors_after_fetch(self, role: "_Role", fetch: str) -> bool:
        """The error check after the batch's last fetch; False when the link dropped during it.

        The batch's data is in hand by then: measuring it again would drive the instrument twice
        and deliver the batch twice. So a dropped link here is not retried: the sessions are
        dropped (the data is kept) and :meth:`_reopen_keeping_data` re-opens them. An error the
        instrument reports still raises.
        """
        try:
            self._check_errors(role, fetch)
        except _transport_errors():
            self._discard()
            return False
        return True

    def _reopen_keeping_data(self) -> None:
        """Re-open the links after a drop that came once the batch's data was in hand.

        ``setup`` runs again, each step error-checked, so an error the instrument still holds
        raises (an :class:`InstrumentError`: the caller receives nothing, nothing is counted,
        and nothing is measured again). A link that cannot be re-opened now is left for the
        next batch (or :meth:`close`) to re-open.
        """
        try:
            self._open()
        except InstrumentConnectionError:
            pass

    def _preamble(self, role: "_Role", tv: dict) -> tuple[float, float, float]:
        """(scale, offset, reference) from the receiver's preamble reply."""
        p = self._v.readout.preamble
        cmd = format_command(p.query, tv, source=self.profile.source,
                             where="visa.readout.preamble.query")
        reply = self._query(role, cmd).strip()
        fields = reply.split(p.separator)
        out = []
        for k, default in (("scale_index", None), ("offset_index", 0.0),
                           ("reference_index", 0.0)):
            i = getattr(p, k)
            if i is None:
                out.append(default)
                continue
            if i >= len(fields):
                raise ReplyFormatError(
                    f"{self.spec.name}: preamble reply {_short(reply)!r} to {cmd!r} has "
                    f"{len(fields)} field(s) split at {p.separator!r}, but "
                    f"visa.readout.preamble.{k} = {i} needs at least {i + 1}; check the query, "
                    f"the separator and the index against the instrument's manual")
            try:
                val = parse_float(fields[i])
            except ValueError:
                val = math.nan
            if not math.isfinite(val):
                raise ReplyFormatError(
                    f"{self.spec.name}: preamble field {i} ({k}) of the reply {_short(reply)!r} "
                    f"to {cmd!r} is {fields[i].strip()!r}, expected a finite number")
            out.append(val)
        if out[0] == 0:
            raise ReplyFormatError(f"{self.spec.name}: preamble reply {_short(reply)!r} to "
                                   f"{cmd!r} gives scale 0 (field {p.scale_index}): every "
                                   f"value would read as the offset")
        return out[0], out[1], out[2]

    def _after_exchange(self) -> None:
        """Run ``after_batch`` (the source's, then the receiver's) once the batch's data is
        safely in hand.

        The data is not measured again if this fails: a lost link is re-opened at once (``setup``
        brings the instrument back to a safe state) or, failing that, by the next batch or by
        :meth:`close` (:meth:`_reopen_keeping_data`); an instrument error makes the instrument
        safe and raises (and the caller receives nothing, so nothing is counted).
        """
        if not any(role.commands.after_batch for role in self._roles):
            return
        try:
            for role in self._roles:
                c = role.commands
                if not c.after_batch:
                    continue
                for i, cmd in enumerate(c.after_batch):
                    role.res.write(self._format(role, cmd, self._template(), f"after_batch[{i}]"))
                self._check_errors(role, "; ".join(c.after_batch))
        except _transport_errors():
            self._discard()
            self._reopen_keeping_data()
        except ReplyFormatError:
            self._discard()
            raise
        except InstrumentError:
            self._make_safe_quietly()
            raise

    def _fetch(self, role: "_Role", cmd: str) -> np.ndarray:
        r = self._v.readout
        if r.datatype == ASCII:
            return self._fetch_ascii(role, cmd)
        try:
            return role.res.query_binary_values(
                cmd, datatype=r.datatype, is_big_endian=r.big_endian, container=np.array,
                raise_on_late_block=True)
        except (ValueError, RuntimeError, struct.error, _pyvisa().errors.InvalidBinaryFormat) as e:
            raise ReplyFormatError(
                f"{self.spec.name}: reply to {cmd!r} is not an IEEE 488.2 binary block of "
                f"{r.datatype!r} values: {e}") from e

    def _fetch_ascii(self, role: "_Role", cmd: str) -> np.ndarray:
        sep = self._v.readout.separator
        text = self._query(role, cmd).strip()
        items = text.split(sep) if text else []
        if items and not items[-1].strip():
            items.pop()  # one trailing separator
        out = np.empty(len(items), np.float64)
        for i, item in enumerate(items):
            try:
                out[i] = parse_float(item)
            except ValueError:
                raise ReplyFormatError(
                    f"{self.spec.name}: item {i} of the ascii reply to {cmd!r} is "
                    f"{_short(item.strip(), 30)!r}, not a number or cut short (reply starts "
                    f"{_short(text, 40)!r}; visa.readout.separator = {sep!r}); check the "
                    f"separator and the instrument's data format") from None
        return out

    def reduce(self, trace, batch: int, *, source: str = "trace",
               channels: int = 1) -> np.ndarray:
        """A flat trace of ``batch * (n_out / channels) * points_per_feature`` values ->
        ``(batch, n_out / channels)``.

        Raises:
            ReplyFormatError: when the trace has the wrong length or non-finite values.
        """
        r = self._v.readout
        k, n_out = r.points_per_feature, self.spec.n_out // channels
        t = np.asarray(trace, np.float64).ravel()
        want = batch * n_out * k
        if t.size != want:
            per = f"n_out {n_out}" if channels == 1 else \
                f"n_out {self.spec.n_out} / {channels} channels = {n_out}"
            raise ReplyFormatError(
                f"{self.spec.name}: {source!r} returned {t.size} values, expected batch {batch} x "
                f"{per} x points_per_feature {k} = {want}; check [visa.readout] "
                f"points_per_feature and the instrument's record length")
        if not np.all(np.isfinite(t)):
            raise ReplyFormatError(f"{self.spec.name}: {source!r} returned "
                                   f"{int((~np.isfinite(t)).sum())} non-finite values")
        red = _REDUCE[r.reduce](t.reshape(batch, n_out, k))
        return r.offset + r.scale * red

    def __repr__(self) -> str:
        state = "connected" if self._connected else "not connected"
        return (f"VisaLayer({self.resource!r}, n_in={self.spec.n_in}, n_out={self.spec.n_out}, "
                f"profile={self.profile.name!r}, {state})")


@dataclasses.dataclass
class _Role:
    """One instrument of the layer: ``instrument`` (one address), or ``source`` / ``receiver``."""

    name: str
    resource: str
    idn_contains: str
    commands: VisaCommands
    key: str  # the profile key of its commands, for messages
    res: object = None


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."

