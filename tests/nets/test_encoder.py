"""The encoder of the auxiliary latent, and the networks composed into a MuLAN model.

Networks are seeded with ``rbg`` keys, which XLA compiles much faster on CPU than the default threefry generator.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mulan_ppl.nets import Encoder, LowRankHead, UNet, parameter_count
from mulan_ppl.schedules import Polynomial

B, K = 2, 6
SHAPE = (4, 4, 3)
SMALL = dict(num_blocks=1, channels=8, num_groups=4)


def rngs(seed):
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def randomize(module, seed, scale=0.3):
    """Replaces every parameter by scale * N(0, 1), so zero-initialised layers no longer hide their inputs."""
    leaves, treedef = jax.tree.flatten(nnx.state(module, nnx.Param))
    rng = np.random.default_rng(seed)
    nnx.update(module, jax.tree.unflatten(
        treedef, [jnp.asarray(scale * rng.standard_normal(x.shape), x.dtype) for x in leaves]))
    return module


def images(seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1.0, 1.0, (B, *SHAPE)), jnp.float32)


@pytest.mark.parametrize("output", ["logits", "gaussian"])
def test_new_encoder_starts_at_the_uniform_or_standard_normal_posterior(output):
    encoder = Encoder(SHAPE, K, **SMALL, output=output, vocab_size=256, rngs=rngs(0))
    result = encoder(images())
    outputs = (result,) if output == "logits" else result
    assert len(outputs) == (1 if output == "logits" else 2)
    for value in outputs:
        assert value.shape == (B, K) and value.dtype == jnp.float32
        assert np.all(np.asarray(value) == 0.0)


@pytest.mark.parametrize("output", ["logits", "gaussian"])
def test_trained_encoder_output_depends_on_its_own_image_only(output):
    encoder = randomize(Encoder(SHAPE, K, **SMALL, output=output, vocab_size=256, rngs=rngs(0)), 1)
    x = images()
    other = x.at[0].set(-x[0])
    for before, after in zip(*(jax.tree.leaves(encoder(v)) for v in (x, other))):
        before, after = np.asarray(before), np.asarray(after)
        assert np.abs(after[0] - before[0]).max() > 1e-3 * np.abs(before).max()
        np.testing.assert_array_equal(after[1:], before[1:])


def test_fourier_features_follow_vocab_size_or_explicit_exponents():
    def input_channels(**kwargs):
        return Encoder(SHAPE, K, **SMALL, rngs=rngs(0), **kwargs).conv_in.kernel.shape[2]

    assert input_channels() == 3  # no vocabulary: the image alone
    assert input_channels(vocab_size=256) == 3 * (1 + 2 * 2)
    assert input_channels(fourier_exponents=(1, 2, 3)) == 3 * (1 + 2 * 3)
    assert input_channels(vocab_size=256, fourier_exponents=()) == 3


def _encoder_parameters(height, width, in_channels, channels, num_blocks, latent_dim, heads=1):
    """Parameter count by layer-shape arithmetic: MuLAN's UnetEncoder less its constant conditioning vector."""
    conv = lambda i, o: 9 * i * o + o  # noqa: E731
    block = 2 * (2 * channels + conv(channels, channels))
    attention = 2 * channels + 4 * (channels * channels + channels)
    return (conv(5 * in_channels, channels) + (num_blocks + 2) * block + attention + 2 * channels
            + conv(channels, 1) + heads * (height * width * latent_dim + latent_dim))


def test_parameter_count_of_the_paper_configuration():
    encoder = nnx.eval_shape(lambda: Encoder((32, 32, 3), 50, num_blocks=4, channels=128, vocab_size=256,
                                             rngs=rngs(0)))
    assert parameter_count(encoder) == _encoder_parameters(32, 32, 3, 128, 4, 50) == 1_910_451
    gaussian = nnx.eval_shape(lambda: Encoder((32, 32, 3), 50, num_blocks=4, channels=128, vocab_size=256,
                                              output="gaussian", rngs=rngs(0)))
    assert parameter_count(gaussian) == _encoder_parameters(32, 32, 3, 128, 4, 50, heads=2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(output="categorical"), "output"),
    (dict(event_shape=(4, 4)), "event_shape"),
    (dict(channels=12, num_groups=8), "num_groups"),
    (dict(latent_dim=0), "latent_dim"),
    (dict(num_blocks=-1), "num_blocks"),
    (dict(vocab_size=1), "vocab_size"),
])
def test_bad_constructor_arguments_are_rejected(kwargs, match):
    arguments = dict(event_shape=SHAPE, latent_dim=K, **SMALL)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Encoder(arguments.pop("event_shape"), arguments.pop("latent_dim"), **arguments, rngs=rngs(0))


def test_images_of_the_wrong_shape_are_rejected():
    encoder = Encoder(SHAPE, K, **SMALL, rngs=rngs(0))
    for x in (jnp.zeros((B, 4, 4, 1)), jnp.zeros((B, 5, 4, 3)), jnp.zeros(SHAPE)):
        with pytest.raises(ValueError, match="`x`"):
            encoder(x)


@pytest.mark.slow  # one compilation of the whole model: ~15 s of CPU with a cold compilation cache
def test_networks_compose_into_a_mulan_model_with_finite_terms():
    import distrax

    from mulan_ppl.hvae import TopDownDiffusion

    vocab = 16
    encoder = randomize(Encoder(SHAPE, K, **SMALL, output="gaussian", vocab_size=vocab, rngs=rngs(0)), 1)
    denoiser = randomize(UNet(3, **SMALL, vocab_size=vocab, context_dim=K, conditioning="gamma_map",
                              rngs=rngs(2)), 3)
    schedule = Polynomial(SHAPE, context_dim=K, rngs=rngs(4),
                          head=LowRankHead(K, 3 * math.prod(SHAPE), rank=2, hidden_width=8, rngs=rngs(5)))

    def posterior(f):
        loc, log_scale = encoder(f)
        return distrax.MultivariateNormalDiag(loc, jnp.exp(log_scale))

    model = TopDownDiffusion(schedule, denoiser, vocab_size=vocab, latent_posterior=posterior,
                             latent_prior=distrax.MultivariateNormalDiag(jnp.zeros(K), jnp.ones(K)))
    x = jax.random.randint(jax.random.key(6, impl="rbg"), (B, *SHAPE), 0, vocab)
    terms = nnx.jit(lambda m, key: m.elbo_terms(x, key))(model, jax.random.key(7, impl="rbg"))
    assert {"reconstruction", "prior", "diffusion", "latent", "nelbo", "bpd"} <= set(terms)
    for value in terms.values():
        assert value.shape == (B,) and np.all(np.isfinite(value))
    assert np.all(np.asarray(terms["latent"]) > 0)  # a randomised encoder is away from the prior
