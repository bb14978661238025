"""The denoiser UNet, its blocks and its input features.

Networks here are seeded with ``rbg`` keys: on CPU, XLA compiles the default threefry generator's initialisers and
dropout masks several times slower, and the tests run eagerly so that compiled primitives are shared between them.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mulan_ppl.nets import (
    AttentionBlock,
    UNet,
    default_fourier_exponents,
    fourier_features,
    parameter_count,
    sinusoidal_embedding,
)

B, H, W, C, K = 2, 4, 4, 3, 5
SMALL = dict(num_blocks=1, channels=8, vocab_size=16, num_groups=4)


def rngs(seed):
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def randomize(module, seed, scale=0.3):
    """Replaces every parameter by scale * N(0, 1), so zero-initialised layers no longer hide their inputs."""
    leaves, treedef = jax.tree.flatten(nnx.state(module, nnx.Param))
    rng = np.random.default_rng(seed)
    nnx.update(module, jax.tree.unflatten(
        treedef, [jnp.asarray(scale * rng.standard_normal(x.shape), x.dtype) for x in leaves]))
    return module


def inputs(seed=0):
    z = jnp.asarray(np.random.default_rng(seed).standard_normal((B, H, W, C)), jnp.float32)
    return z, jnp.array([0.25, 0.75]), jnp.full((B, H, W, C), -2.0), jnp.eye(B, K)


@pytest.fixture(scope="module")
def conditioned():
    """A small randomised network per conditioning mode, with a context."""
    return {mode: randomize(UNet(C, **SMALL, conditioning=mode, context_dim=K, rngs=rngs(0)), 1)
            for mode in ("mean_gamma", "gamma_map")}


# ----------------------------------------------------------------------------------------------- input features


def test_default_fourier_exponents_are_at_the_bin_scale():
    assert default_fourier_exponents(256) == (6, 7)  # VDM's
    assert default_fourier_exponents(17) == (2, 3)
    assert default_fourier_exponents(2) == (-1, 0)
    for vocab in (2, 17, 100, 256, 1000):
        top = default_fourier_exponents(vocab)[1]
        period, bin_width = 2.0 ** -top, 2.0 / vocab
        assert bin_width <= period < 2 * bin_width  # the finest feature resolves one bin, not less


def test_fourier_features_match_the_vdm_layout():
    z = np.random.default_rng(0).uniform(-1, 1, (2, 3, 3, 2)).astype(np.float32)
    got = np.asarray(fourier_features(jnp.asarray(z), (6, 7)))
    w = 2.0 ** np.array([6, 7]) * 2 * np.pi
    h = np.stack([z[..., c] * w_k for c in range(2) for w_k in w], axis=-1)  # channel-major
    np.testing.assert_allclose(got, np.concatenate([np.sin(h), np.cos(h)], axis=-1), atol=2e-4)
    assert fourier_features(jnp.asarray(z), ()).shape == (2, 3, 3, 0)


def test_sinusoidal_embedding_matches_the_formula():
    t = np.array([0.0, 0.3, 1.0])
    got = np.asarray(sinusoidal_embedding(jnp.asarray(t, jnp.float32), 6))
    freqs = np.exp(-np.log(10000.0) / 2 * np.arange(3))
    angles = 1000.0 * t[:, None] * freqs
    np.testing.assert_allclose(got, np.concatenate([np.sin(angles), np.cos(angles)], 1), atol=1e-4)
    assert sinusoidal_embedding(jnp.ones(2), 5).shape == (2, 5)


def test_attention_block_matches_a_numpy_reference():
    block = randomize(AttentionBlock(8, num_groups=4, rngs=rngs(0)), 2)
    x = np.random.default_rng(3).standard_normal((B, H, W, 8)).astype(np.float32)
    p = {k: np.asarray(v, np.float64) for k, v in nnx.to_flat_state(nnx.state(block, nnx.Param))}
    groups = x.reshape(B, H * W, 4, 2).astype(np.float64)
    mean, var = groups.mean(axis=(1, 3), keepdims=True), groups.var(axis=(1, 3), keepdims=True)
    u = ((groups - mean) / np.sqrt(var + 1e-6)).reshape(B, H * W, 8)
    u = u * p[("norm", "scale")] + p[("norm", "bias")]
    q, k, v = np.split(u @ p[("qkv", "kernel")] + p[("qkv", "bias")], 3, axis=-1)
    logits = q @ k.transpose(0, 2, 1) / np.sqrt(8)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)  # over the keys
    out = (weights @ v) @ p[("proj_out", "kernel")] + p[("proj_out", "bias")]
    expected = x + out.reshape(B, H, W, 8)
    np.testing.assert_allclose(block(jnp.asarray(x)), expected, rtol=1e-4, atol=1e-4)


# -------------------------------------------------------------------------------------------------- the UNet


@pytest.mark.parametrize("mode", ["mean_gamma", "gamma_map"])
def test_new_network_returns_exactly_zero_or_z_with_input_skip(mode):
    z, t, gamma, context = inputs()
    unet = UNet(C, **SMALL, conditioning=mode, context_dim=K, rngs=rngs(0))
    out = unet(z, t, gamma, context)
    assert out.shape == z.shape and out.dtype == z.dtype
    assert np.all(np.asarray(out) == 0.0)
    skip = UNet(C, **SMALL, conditioning=mode, context_dim=K, input_skip=True, rngs=rngs(0))
    np.testing.assert_array_equal(skip(z, t, gamma, context), z)


def test_gamma_map_sees_each_pixel_while_mean_gamma_sees_only_the_mean(conditioned):
    z, t, gamma, context = inputs()
    # Move one pixel's gamma up and another's down by the same amount: the mean is unchanged, exactly.
    moved = gamma.at[0, 1, 1, 0].set(-1.0).at[0, 2, 2, 1].set(-3.0)
    assert float(moved.mean()) == float(gamma.mean())
    mean_net, map_net = conditioned["mean_gamma"], conditioned["gamma_map"]
    np.testing.assert_array_equal(mean_net(z, t, gamma, context), mean_net(z, t, moved, context))
    before, after = np.asarray(map_net(z, t, gamma, context)), np.asarray(map_net(z, t, moved, context))
    assert np.abs(after - before)[0].max() > 1e-3 * np.abs(before).max()
    np.testing.assert_array_equal(after[1], before[1])  # the other example is untouched
    # Both respond to the mean level.
    for net in (mean_net, map_net):
        assert not np.allclose(net(z, t, gamma, context), net(z, t, gamma + 1.0, context))


def test_gamma_of_shape_batch_is_the_broadcast_map(conditioned):
    z, t, _, context = inputs()
    levels = jnp.array([-5.0, 1.0])
    full = jnp.broadcast_to(levels[:, None, None, None], z.shape)
    for net in conditioned.values():
        np.testing.assert_array_equal(net(z, t, levels, context), net(z, t, full, context))


def test_context_changes_the_output_of_its_own_example_only(conditioned):
    z, t, gamma, context = inputs()
    other = context.at[0].set(jnp.array([0.0, 0.0, 1.0, 1.0, 0.0]))
    for net in conditioned.values():
        before, after = np.asarray(net(z, t, gamma, context)), np.asarray(net(z, t, gamma, other))
        assert np.abs(after - before)[0].max() > 1e-3 * np.abs(before).max()
        np.testing.assert_array_equal(after[1], before[1])


def test_time_is_checked_but_not_used(conditioned):
    z, t, gamma, context = inputs()
    net = conditioned["mean_gamma"]
    np.testing.assert_array_equal(net(z, t, gamma, context), net(z, None, gamma, context))
    np.testing.assert_array_equal(net(z, t, gamma, context), net(z, 1.0 - t, gamma, context))


def test_nnx_jit_matches_eager(conditioned):
    z, t, gamma, context = inputs()
    net = conditioned["gamma_map"]
    jitted = np.asarray(nnx.jit(lambda m, *args: m(*args))(net, z, t, gamma, context))
    eager = np.asarray(net(z, t, gamma, context))
    # Compiled and eager float32 differ by round-off only, which the random weights amplify layer after layer.
    np.testing.assert_allclose(jitted, eager, rtol=0, atol=1e-4 * np.abs(eager).max())


def test_dropout_is_on_in_train_mode_off_in_eval_mode_and_follows_reseed():
    z, t, gamma, context = inputs()
    net = randomize(UNet(C, **SMALL, dropout=0.5, context_dim=K, rngs=rngs(0)), 1)
    net.eval()
    reference = np.asarray(net(z, t, gamma, context))
    np.testing.assert_array_equal(net(z, t, gamma, context), reference)
    net.train()
    first, second = np.asarray(net(z, t, gamma, context)), np.asarray(net(z, t, gamma, context))
    assert not np.allclose(first, reference) and not np.allclose(first, second)
    np.testing.assert_array_equal(net(z, t, gamma, context, deterministic=True), reference)
    nnx.reseed(net, dropout=jax.random.key(7, impl="rbg"))
    again = np.asarray(net(z, t, gamma, context))
    nnx.reseed(net, dropout=jax.random.key(7, impl="rbg"))
    np.testing.assert_array_equal(net(z, t, gamma, context), again)


def test_remat_gives_the_same_outputs_gradients_and_dropout_masks():
    z, t, gamma, context = inputs()
    config = dict(SMALL, num_blocks=0, attention=False, dropout=0.5, context_dim=K)
    nets = [randomize(UNet(C, **config, remat=flag, rngs=rngs(0)), 1) for flag in (False, True)]
    # Training mode: the same masks, from the same stream, which advances under remat too.
    for net in nets:
        nnx.reseed(net, dropout=jax.random.key(3, impl="rbg"))
    first, second = ([np.asarray(net(z, t, gamma, context)) for net in nets] for _ in range(2))
    assert not np.allclose(first[0], second[0])
    for plain, remat in (first, second):
        np.testing.assert_allclose(remat, plain, rtol=1e-5, atol=1e-6)
    # Gradients, through a pure JAX transformation of the split state (as diffrax or custom_vjp code uses it).
    results = []
    for net in nets:
        net.eval()
        graphdef, params, rest = nnx.split(net, nnx.Param, ...)
        loss = lambda p: jnp.sum(nnx.merge(graphdef, p, rest)(z, t, gamma, context) ** 2)  # noqa: E731
        results.append(jax.jit(jax.value_and_grad(loss))(params))
    (value, grads), (remat_value, remat_grads) = results
    np.testing.assert_allclose(remat_value, value, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(remat_grads)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_bfloat16_computation_keeps_float32_parameters_and_output(conditioned):
    z, t, gamma, context = inputs()
    full = np.asarray(conditioned["mean_gamma"](z, t, gamma, context))
    net = randomize(UNet(C, **SMALL, context_dim=K, dtype=jnp.bfloat16, rngs=rngs(0)), 1)  # the same parameters
    assert {x.dtype for x in jax.tree.leaves(nnx.state(net, nnx.Param))} == {jnp.dtype(jnp.float32)}
    half = np.asarray(nnx.jit(lambda m, *args: m(*args))(net, z, t, gamma, context))
    assert half.dtype == np.float32
    error = np.abs(half - full).max() / np.abs(full).max()
    assert 0.0 < error < 0.1  # bfloat16 keeps 8 significant bits: the computation really ran in it


def _paper_unet_parameters(in_channels, channels, num_blocks, context_dim, extra_inputs, attention=True):
    """Parameter count of VDM's score network by layer-shape arithmetic (reference-implementations §1.6)."""
    e, cond = channels, 4 * channels
    conv = lambda i, o: 9 * i * o + o  # noqa: E731
    group_norm = lambda c: 2 * c  # noqa: E731
    embedding = (e * cond + cond) + context_dim * cond + (cond * cond + cond)
    conv_in = conv(in_channels * 5 + extra_inputs, e)  # z and two Fourier exponents (sin, cos)
    block = group_norm(e) + conv(e, e) + cond * e + group_norm(e) + conv(e, e)
    up_block = group_norm(2 * e) + conv(2 * e, e) + cond * e + group_norm(e) + conv(e, e) + (2 * e * e + e)
    attention = (group_norm(e) + 4 * (e * e + e)) if attention else 0
    out = group_norm(e) + conv(e, in_channels)
    return embedding + conv_in + num_blocks * block + 2 * block + attention + (num_blocks + 1) * up_block + out


@pytest.mark.parametrize("context_dim, conditioning, attention", [
    (5, "mean_gamma", True), (None, "mean_gamma", False), (5, "gamma_map", True)])
def test_parameter_count_matches_the_reference_layer_shapes(context_dim, conditioning, attention):
    for num_blocks in (1, 2):
        unet = nnx.eval_shape(lambda: UNet(3, num_blocks=num_blocks, channels=16, vocab_size=256, dropout=0.1,
                                           context_dim=context_dim, conditioning=conditioning,
                                           attention=attention, rngs=rngs(0)))
        expected = _paper_unet_parameters(3, 16, num_blocks, context_dim or 0,
                                          3 if conditioning == "gamma_map" else 0, attention)
        assert parameter_count(unet) == expected


def test_parameter_count_of_the_paper_configuration_by_arithmetic():
    # MuLAN's CIFAR-10 denoiser (E = 128, L = 32, c of 50 dims); the reference's own estimate is ~30.6 M. The count
    # of the module itself is checked at this size by the slow test below and at small sizes above.
    assert _paper_unet_parameters(3, 128, 32, 50, 0) == 30_603_267
    assert _paper_unet_parameters(3, 128, 32, 0, 0) == 30_577_667  # VDM's, unconditioned


@pytest.mark.slow
def test_parameter_count_of_the_paper_configuration():
    unet = nnx.eval_shape(lambda: UNet(3, num_blocks=32, channels=128, vocab_size=256, dropout=0.1,
                                       context_dim=50, rngs=rngs(0)))
    assert parameter_count(unet) == 30_603_267


@pytest.mark.parametrize("kwargs, match", [
    (dict(conditioning="gamma_vector"), "conditioning"),
    (dict(channels=12, num_groups=8), "num_groups"),
    (dict(channels=0), "channels"),
    (dict(num_blocks=-1), "num_blocks"),
    (dict(dropout=1.0), "dropout"),
    (dict(vocab_size=1), "vocab_size"),
    (dict(context_dim=0), "context_dim"),
    (dict(gamma_min=5.0, gamma_max=-13.3), "gamma_min"),
    (dict(fourier_exponents=(6.5,)), "fourier_exponents"),
    (dict(attention="yes"), "attention"),
])
def test_bad_constructor_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet(C, **{**SMALL, **kwargs}, rngs=rngs(0))


def test_bad_call_arguments_are_rejected(conditioned):
    z, t, gamma, context = inputs()
    net = conditioned["mean_gamma"]
    cases = [
        ((z[..., :2], t, gamma[..., :2], context), "`z`"),
        ((z[0], t, gamma[0], context), "`z`"),
        ((z, t, gamma[:, :2], context), "`gamma`"),
        ((z, t, gamma[0, 0, 0], context), "`gamma`"),
        ((z, t[:1], gamma, context), "`t`"),
        ((z, t, gamma, None), "`context`"),
        ((z, t, gamma, context[:, :3]), "`context`"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            net(*args)
    unconditioned = UNet(C, **SMALL, rngs=rngs(0))
    with pytest.raises(ValueError, match="context_dim"):
        unconditioned(z, t, gamma, context)
    assert math.prod(unconditioned(z, t, gamma, None).shape) == z.size
