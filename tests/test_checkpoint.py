"""Checkpoints: exact round trip, atomic writes, checksum refusal with fallback, retention."""

import functools
import os
from collections import defaultdict

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pnn.checkpoint import (
    CheckpointError,
    CheckpointWarning,
    load_checkpoint,
    rng_from_state,
    rng_state,
    save_checkpoint,
)
from pnn.network import Block


def _blocks(seed=0, hidden=(4, 3)):
    return list(_init_blocks(jax.random.PRNGKey(seed), hidden))


@eqx.filter_jit  # one compilation instead of one per eager op
def _init_blocks(key, hidden):
    keys = jax.random.split(key, len(hidden))
    dims = [5, *hidden]
    return [Block(dims[k], 3, h, key=kk) for k, (h, kk) in enumerate(zip(hidden, keys))]


_OPT = optax.adam(1e-2)


@eqx.filter_jit
def _two_adam_steps(params, k):
    s = _OPT.init(params)
    for i in range(2):
        g = jax.tree_util.tree_map(lambda p: jnp.sin(p + i + k), params)
        upd, s = _OPT.update(g, s, params)
        params = eqx.apply_updates(params, upd)
    return params, s


@functools.lru_cache(maxsize=None)
def _trained(seed, hidden):
    """Blocks and their Adam states after two steps (immutable pytrees: safe to share)."""
    blocks = _blocks(seed, hidden)
    blocks[0] = blocks[0].with_calibration(np.full((2, 3), 0.37, np.float32))  # block 1 stays weak
    opt_states = []
    for k, b in enumerate(blocks):
        params, static = eqx.partition(b, b.trainable())
        params, s = _two_adam_steps(params, jnp.float32(k))
        blocks[k] = eqx.combine(params, static)
        opt_states.append(s)
    return tuple(blocks), tuple(opt_states)


def _state(seed=0, hidden=(4, 3)):
    """A PhyLL-like training state: blocks, Adam states, rng, flags, position, counters."""
    blocks, opt_states = _trained(seed, hidden)
    rng = np.random.default_rng(seed)
    rng.permutation(10)
    rng.integers(1, 4, size=7)
    queries = defaultdict(int, {"L0": 1280, "L1": 1280})
    return {
        "blocks": list(blocks),
        "opt_states": list(opt_states),
        "calibrated": [True, False],
        "rng": rng,
        "epoch": 3,
        "batch": 5,
        "history": [{"epoch": 1, "loss": 0.6931471805599453, "test_accuracy": 1 / 3,
                     "nan": float("nan")}],
        "ledger": {"queries_by_layer": queries, "flops_by_item": {"trainable update": 2**40 + 1},
                   "physical_s": 0.1 + 0.2},
    }


def _fresh(hidden):
    blocks = _blocks(99, hidden)
    return blocks, [_OPT.init(eqx.filter(b, b.trainable())) for b in blocks]


def _template(hidden=(4, 3), shapes_only=False):
    """What a resuming trainer builds: freshly initialised blocks and optimiser states, or
    only their shapes (``jax.ShapeDtypeStruct`` leaves, nothing computed)."""
    blocks, opt_states = (eqx.filter_eval_shape if shapes_only else lambda f, h: f(h))(
        _fresh, hidden)
    return {"blocks": blocks, "opt_states": opt_states, "calibrated": None,
            "rng": np.random.default_rng(), "epoch": 0, "batch": 0, "history": None,
            "ledger": None}


def _assert_bitwise(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        assert type(x) is type(y)
        assert np.asarray(x).dtype == np.asarray(y).dtype
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()
        assert getattr(x, "weak_type", None) == getattr(y, "weak_type", None)


def test_round_trip_is_bitwise_and_everything_continues(tmp_path):
    state = _state()
    path = save_checkpoint(tmp_path, state, step=7)
    assert path.name == "ckpt-00000007.npz"
    npz = np.load(path)  # an ordinary npz archive
    assert {"meta.json", "leaf_00000"} <= set(npz.files) and npz["leaf_00000"].shape == (4, 8)
    out, step = load_checkpoint(tmp_path, _template())
    assert step == 7
    _assert_bitwise(out["blocks"], state["blocks"])
    _assert_bitwise(out["opt_states"], state["opt_states"])
    assert out["blocks"][1].cal.weak_type and not out["blocks"][0].cal.weak_type

    # the rng continues with the same draws, and spawns the same children
    assert np.array_equal(out["rng"].integers(0, 2**62, size=5),
                          state["rng"].integers(0, 2**62, size=5))
    assert out["rng"].spawn(1)[0].random() == state["rng"].spawn(1)[0].random()

    assert out["calibrated"] == [True, False] and (out["epoch"], out["batch"]) == (3, 5)
    h = out["history"][0]
    assert h["loss"] == 0.6931471805599453 and h["test_accuracy"] == 1 / 3 and np.isnan(h["nan"])
    assert out["ledger"] == {"queries_by_layer": {"L0": 1280, "L1": 1280},
                             "flops_by_item": {"trainable update": 2**40 + 1},
                             "physical_s": 0.1 + 0.2}

    # one more optimiser step from the restored state equals one from the original
    @eqx.filter_jit
    def step_once(blk, s):
        params, _ = eqx.partition(blk, blk.trainable())
        upd, s = _OPT.update(jax.tree_util.tree_map(jnp.cos, params), s, params)
        return eqx.apply_updates(params, upd), s

    _assert_bitwise(step_once(out["blocks"][0], out["opt_states"][0]),
                    step_once(state["blocks"][0], state["opt_states"][0]))
    # same state, same bytes: the file holds no timestamps
    assert save_checkpoint(tmp_path / "again", _state(), step=7).read_bytes() == path.read_bytes()


class _Odd(eqx.Module):
    key: jax.Array
    half: jax.Array
    host: np.ndarray
    scalar: np.float32
    scale: float
    act: object


def test_round_trip_of_unusual_leaves_and_shape_templates(tmp_path):
    odd = _Odd(jax.random.key(3), jnp.arange(4, dtype=jnp.bfloat16) / 3,
               np.arange(6, dtype=np.int16).reshape(2, 3), np.float32(2.5), 0.1, jax.nn.relu)
    save_checkpoint(tmp_path, {"odd": odd, "blocks": _blocks()}, step=1)
    like = {"odd": odd, "blocks": eqx.filter_eval_shape(_blocks)}  # ShapeDtypeStruct leaves
    out, _ = load_checkpoint(tmp_path, like)
    o = out["odd"]
    assert jnp.array_equal(jax.random.key_data(o.key), jax.random.key_data(odd.key))
    assert o.half.dtype == jnp.bfloat16 and o.half.tobytes() == odd.half.tobytes()
    assert type(o.host) is np.ndarray and np.array_equal(o.host, odd.host)
    assert type(o.scalar) is np.float32 and o.scalar == odd.scalar
    assert o.scale == 0.1 and o.act is jax.nn.relu
    _assert_bitwise(out["blocks"], _blocks())

    with pytest.raises(ValueError, match=r"leaf \.act is the callable 'relu' in the checkpoint "
                                         r"but the callable 'tanh' in the template"):
        load_checkpoint(tmp_path, {**like, "odd": eqx.tree_at(lambda m: m.act, odd, jnp.tanh)})


def test_crash_between_temp_write_and_rename_keeps_the_previous(tmp_path, monkeypatch):
    old = _state(seed=1)
    save_checkpoint(tmp_path, old, step=1)

    def crash(src, dst):
        raise OSError("simulated power cut before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated power cut"):
        save_checkpoint(tmp_path, _state(seed=2), step=2)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000001.npz"]
    out, step = load_checkpoint(tmp_path, _template())
    assert step == 1
    _assert_bitwise(out["blocks"], old["blocks"])


def test_temp_file_of_a_killed_writer_is_ignored_then_removed(tmp_path):
    save_checkpoint(tmp_path, _state(), step=1)
    stale = tmp_path / ".ckpt-00000002.npz.tmp-123-abcd"
    stale.write_bytes(b"PK\x03\x04 half a zip")  # killed mid-write: no cleanup ran
    assert load_checkpoint(tmp_path, _template())[1] == 1
    save_checkpoint(tmp_path, _state(), step=2)
    assert not stale.exists()


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


def _empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize("damage, why", [
    (_flip, r"checksum mismatch \(stored sha256 [0-9a-f]{12}\.\.\., contents hash to "
            r"[0-9a-f]{12}\.\.\.\): the file is corrupt"),
    (_truncate, r"no checksum trailer at its end \(\d+ bytes\): the file is truncated"),
    (_empty, r"no checksum trailer at its end \(0 bytes\)"),
])
def test_corrupt_newest_is_refused_with_a_warning_and_the_previous_loads(tmp_path, damage, why):
    old = _state(seed=1)
    save_checkpoint(tmp_path, old, step=1)
    damage(save_checkpoint(tmp_path, _state(seed=2), step=2))
    with pytest.warns(CheckpointWarning,
                      match=rf"refusing checkpoint .*ckpt-00000002\.npz: {why}.*; falling back "
                            r"to ckpt-00000001\.npz \(step 1\)"):
        out, step = load_checkpoint(tmp_path, _template())
    assert step == 1
    _assert_bitwise(out["blocks"], old["blocks"])
    # resuming and saving again replaces the corrupt file
    save_checkpoint(tmp_path, out, step=2)
    assert load_checkpoint(tmp_path, _template())[1] == 2


def test_all_corrupt_raises_checkpoint_error_listing_each(tmp_path):
    save_checkpoint(tmp_path, _state(), step=1)
    save_checkpoint(tmp_path, _state(), step=2)
    _truncate(tmp_path / "ckpt-00000002.npz")
    _flip(tmp_path / "ckpt-00000001.npz")
    with pytest.raises(CheckpointError,
                       match=r"(?s)no usable checkpoint in .*: all 2 found were refused:\n"
                             r"  ckpt-00000002\.npz: no checksum trailer.*\n"
                             r"  ckpt-00000001\.npz: checksum mismatch.*Restart the run"):
        load_checkpoint(tmp_path, _template())


def test_no_checkpoint_returns_none(tmp_path):
    assert load_checkpoint(tmp_path, _template()) is None
    assert load_checkpoint(tmp_path / "missing", _template()) is None


@pytest.mark.parametrize("like, match", [
    (lambda: _template(hidden=(4, 5), shapes_only=True),
     r"entry 'blocks' leaf \[1\]\.W is an array of shape \(3, 7\) and dtype float32 in "
     r"the checkpoint but an array of shape \(5, 7\) and dtype float32 in the template "
     r"\(2 more leaves differ\)"),
    (lambda: _template(hidden=(4, 3, 2), shapes_only=True),
     r"entry 'blocks' has a different pytree structure: node 0 \(pre-order\) is list/2 in "
     r"the checkpoint but list/3 in the template"),
    (lambda: {**_template(), "scheduler": None},
     r"missing from the checkpoint: \['scheduler'\]; not in the template: \[\]"),
    (lambda: {**_template(), "rng": None},
     r"entry 'rng' is a numpy Generator in the checkpoint but plain data in the template"),
])
def test_a_checkpoint_of_another_configuration_is_a_value_error(tmp_path, like, match):
    save_checkpoint(tmp_path, _state(), step=1)
    with pytest.raises(ValueError, match=r"checkpoint ckpt-00000001\.npz \(step 1\) does not "
                                         r"match this configuration: .*" + match):
        load_checkpoint(tmp_path, like())


def test_keep_retains_the_newest_good_checkpoints(tmp_path):
    state = _state()
    for step in range(1, 5):
        save_checkpoint(tmp_path, state, step=step, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000003.npz",
                                                          "ckpt-00000004.npz"]
    _flip(tmp_path / "ckpt-00000004.npz")  # a corrupt one does not count as kept
    save_checkpoint(tmp_path, state, step=5, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000003.npz",
                                                          "ckpt-00000005.npz"]


def test_save_refuses_to_bury_a_later_good_checkpoint(tmp_path):
    save_checkpoint(tmp_path, _state(), step=5)
    with pytest.raises(ValueError, match=r"already holds a good checkpoint at step 5 > 3 "
                                         r"\(ckpt-00000005\.npz\).*fresh directory"):
        save_checkpoint(tmp_path, _state(), step=3)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"step": -1}, ValueError, r"step must be a non-negative integer, got -1"),
    ({"step": 1.5}, ValueError, r"step must be a non-negative integer, got 1\.5"),
    ({"step": 1, "keep": 0}, ValueError, r"keep must be an integer >= 1, got 0"),
    ({"step": 1, "state": {"x": [np.random.default_rng(0), jnp.ones(2)]}}, TypeError,
     r"state\['x'\] leaf \[0\] has type Generator, which cannot be checkpointed: store the "
     r"Generator as its own top-level entry"),
    ({"step": 1, "state": {"x": [object(), jnp.ones(2)]}}, TypeError,
     r"state\['x'\] leaf \[0\] has type object, which cannot be checkpointed"),
    ({"step": 1, "state": {1: 2}}, ValueError, r"state keys must be non-empty strings, got \[1\]"),
])
def test_save_validates_its_arguments(tmp_path, kwargs, exc, match):
    kwargs = {"state": {"epoch": 1}, **kwargs}
    with pytest.raises(exc, match=match):
        save_checkpoint(tmp_path, **kwargs)
    assert not list(tmp_path.iterdir())


def test_rng_helpers_continue_exactly_and_reject_others():
    gen = np.random.default_rng([1, 2, 3])
    gen.normal(size=3)
    copy = rng_from_state(rng_state(gen))
    assert copy.bit_generator.state == gen.bit_generator.state
    assert np.array_equal(copy.random(4), gen.random(4))
    bare = rng_from_state(gen.bit_generator.state)  # numpy's own dict works too
    assert bare.integers(1 << 60) == gen.integers(1 << 60)
    with pytest.raises(ValueError, match=r"supports bit generators \['PCG64', 'PCG64DXSM'\], "
                                         r"got MT19937"):
        rng_state(np.random.Generator(np.random.MT19937(0)))
    with pytest.raises(TypeError, match="expects a numpy.random.Generator, got RandomState"):
        rng_state(np.random.RandomState(0))
    with pytest.raises(ValueError, match=r"invalid PCG64 state \(KeyError: 'state'\)"):
        rng_from_state({"bit_generator_state": {"bit_generator": "PCG64"}})
