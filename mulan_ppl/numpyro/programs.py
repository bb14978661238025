"""The top-down diffusion HVAE as a NumPyro ``model``/``guide`` pair.

:class:`DiffusionPrograms` writes the model of :class:`mulan_ppl.hvae.TopDownDiffusion` as two NumPyro programs
whose sample sites run top-down: ``c`` (the auxiliary latent, if any), ``z_1``, the diffusion levels, ``x``. The
levels are either ``T`` explicit sites, for which ``numpyro.infer.TraceMeanField_ELBO`` is the exact T-step bound up
to the draw of z, or one collapsed site ``z_0`` whose model distribution :class:`ReverseChain` hands the schedule and
the denoiser to :class:`mulan_ppl.numpyro.DiffusionELBO`, which gives the one-random-level and continuous-time
estimators. Importing this module never imports TensorFlow Probability.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpyro
from flax import nnx
from numpyro import distributions as dist
from numpyro.contrib.module import nnx_module
from numpyro.distributions import constraints

from mulan_ppl import core
from mulan_ppl._validation import (
    as_float_array,
    check_integer_data,
    check_one_of,
    check_positive_int,
    check_values,
    event_ndims_for,
)
from mulan_ppl.numpyro.decoder import DiscretizedGaussianDecoder
from mulan_ppl.numpyro.gaussian import (
    ForwardMarginal,
    ReverseTransition,
    TopDownPosterior,
)
from mulan_ppl.schedules import evaluate_schedule

__all__ = ["DiffusionPrograms", "ReverseChain"]

# The denoiser targets of `mulan_ppl.hvae.diffusion_term` (`core.PARAMETERIZATIONS` minus the score, which no
# ELBO here trains); repeated because importing `hvae` would import TensorFlow Probability.
PARAMETERIZATIONS = core.DENOISER_TARGETS


class ReverseChain(dist.Distribution):
    r"""The generative chain :math:`p(z_0 \mid z_1)` of a diffusion model, as one NumPyro site (the diffusion levels).

    Mathematical details:
        The chain :math:`z_1 \to \dots \to z_0` with reverse transitions
        :math:`p(z_s|z_t) = q(z_s \mid z_t, \hat x(z_t, t))` (:class:`~mulan_ppl.numpyro.ReverseTransition`) has an
        intractable marginal :math:`p(z_0|z_1)`. Paired with the guide's :math:`q(z_0|x)`
        (:class:`~mulan_ppl.numpyro.ForwardMarginal`), its contribution to the negative ELBO is the diffusion term

        .. math:: \mathcal L_{\mathrm{diff}} = \sum_{\text{levels}}
            \mathbb E_{q(z_t|x)} \mathrm{KL}\big(q(z_s|z_t,x) \,\|\, p(z_s|z_t)\big)

        (or its continuous-time limit), which :class:`~mulan_ppl.numpyro.DiffusionELBO` estimates with
        :func:`mulan_ppl.hvae.diffusion_term` from the ``gamma_fn``, ``denoiser``, ``parameterization`` and
        ``context`` stored here. The class holds no maths of its own; ``log_prob`` and ``sample`` raise.

    Args:
        z_1: the chain's start, shape ``(B, *event)``.
        gamma_fn: schedule ``gamma_fn(t, context)`` (parameters already bound).
        denoiser: ``denoiser(z_t, t, gamma_t, context)`` returning the ``parameterization`` prediction.
        parameterization: ``"eps"``, ``"v"`` or ``"x"``.
        context: the auxiliary latent passed to ``gamma_fn`` and ``denoiser``, shape ``(B, ...)``, or ``None``.
        event_ndims: trailing event dims, default ``z_1.ndim - 1``.

    Raises:
        ValueError: an unknown ``parameterization``; an ``event_ndims`` outside ``[0, z_1.ndim]``; (when concrete)
            NaN or Inf in ``z_1``.
        TypeError: ``z_1`` not real-valued; ``gamma_fn`` or ``denoiser`` not callable.

    Example:
        >>> from mulan_ppl.schedules import FixedLinear
        >>> p = ReverseChain(jnp.zeros((2, 3)), FixedLinear(), lambda z, t, g, c: jnp.zeros_like(z))
        >>> print(p.batch_shape, p.event_shape, p.parameterization)
        (2,) (3,) eps
    """

    arg_constraints = {"z_1": constraints.real}
    reparametrized_params = ["z_1"]
    pytree_data_fields = ("z_1", "context")
    pytree_aux_fields = ("gamma_fn", "denoiser", "parameterization")

    def __init__(self, z_1, gamma_fn: Callable, denoiser: Callable, *, parameterization: str = "eps", context=None,
                 event_ndims: int | None = None):
        where = "ReverseChain"
        self.parameterization = check_one_of(where, "parameterization", parameterization, PARAMETERIZATIONS)
        for name, fn in (("gamma_fn", gamma_fn), ("denoiser", denoiser)):
            if not callable(fn):
                raise TypeError(f"`{where}`: `{name}` must be callable; got {type(fn).__name__}.")
        self.z_1 = check_values(where, z_1=as_float_array(z_1, "z_1", where))["z_1"]
        self.gamma_fn, self.denoiser, self.context = gamma_fn, denoiser, context
        ndims = event_ndims_for(where, self.z_1.shape, event_ndims)
        split = self.z_1.ndim - ndims
        super().__init__(batch_shape=self.z_1.shape[:split], event_shape=self.z_1.shape[split:], validate_args=None)

    @constraints.dependent_property(is_discrete=False)
    def support(self):
        return constraints.independent(constraints.real, self.event_dim)

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        raise NotImplementedError(
            "`ReverseChain.sample`: the collapsed chain is evaluated, not sampled; draw z_0 with "
            "`mulan_ppl.sampling.ancestral_sample` or use `DiffusionPrograms(..., num_steps=T)`, whose levels are "
            "explicit sites."
        )

    def log_prob(self, value: jax.Array) -> jax.Array:
        raise NotImplementedError(
            "`ReverseChain.log_prob`: the marginal p(z_0 | z_1) of the reverse chain is intractable. Evaluate programs "
            "with a collapsed levels site using `mulan_ppl.numpyro.DiffusionELBO`, which replaces this site's term by "
            "the diffusion loss, or build them with `num_steps=T` for `TraceMeanField_ELBO`."
        )


def _bind(fn, name: str):
    """Registers the parameters of an ``nnx.Module`` under ``name + "$params"``; other callables are fixed."""
    if isinstance(fn, nnx.Module) and jax.tree.leaves(nnx.state(fn, nnx.Param)):
        return nnx_module(name, fn)
    return fn


class DiffusionPrograms:
    r"""The top-down diffusion HVAE (VDM, MuLAN) as a NumPyro ``model`` and ``guide``, sites in top-down order.

    Mathematical details:
        For integer data :math:`x` encoded to :math:`f = 2(x + \tfrac12)/V - 1`, an optional auxiliary latent
        :math:`c` and the per-dimension noise level :math:`\gamma(t, c)`, the sites are, top-down (guide | model):

        * ``c``: ``latent_posterior(f)`` | ``latent_prior``;
        * ``z_1``: :math:`q(z_1|x) = \mathcal N(\alpha_1 f, \sigma_1^2)` (``ForwardMarginal``) |
          :math:`\mathcal N(0, I)`;
        * the levels: :math:`q(z_s|z_t, x)` (``TopDownPosterior``) | :math:`p(z_s|z_t)` (``ReverseTransition``
          with the denoiser's prediction at :math:`z_t`);
        * ``x``: — | :math:`p(x|z_0)` (``DiscretizedGaussianDecoder``), observed.

        With ``num_steps=T`` the levels are the T sites ``z_{(T-1)/T}, ..., z_{1/T}, z_0`` (named ``"z_3/4"``-style,
        ``"z_0"`` last), :math:`(s, t) = ((i-1)/T, i/T)`; every pair has a registered KL, so
        ``TraceMeanField_ELBO(sum_sites=False)`` returns the terms of the T-step bound by site: ``x`` the
        reconstruction, ``z_1`` the prior KL, the level sites the T per-step KLs (their sum, the diffusion term),
        ``c`` the latent KL. With ``num_steps=None`` the levels are one site ``z_0`` with guide
        :math:`q(z_0|x) = \mathcal N(\alpha_0 f, \sigma_0^2)` and model :class:`ReverseChain`; evaluate these with
        :class:`~mulan_ppl.numpyro.DiffusionELBO`, which chooses the discrete- or continuous-time diffusion term.
        Either way the terms are those of :meth:`mulan_ppl.hvae.TopDownDiffusion.elbo_terms` (:meth:`named_terms`
        groups them under its names).

    Args:
        gamma_fn: schedule ``gamma_fn(t, context)``; an ``nnx.Module`` with parameters has them registered as the
            ``numpyro.param`` site ``"gamma_fn$params"`` (shared by model and guide), any other callable is fixed.
        denoiser: ``denoiser(z_t, t, gamma_t, context)`` returning the ``parameterization`` prediction of shape
            ``(B, *event)``; registered as ``"denoiser$params"`` when an ``nnx.Module``.
        vocab_size: number of integer levels ``V >= 2`` of the data.
        parameterization: the denoiser's target, ``"eps"``, ``"v"`` or ``"x"``.
        num_steps: ``None`` for one collapsed levels site, or ``T >= 1`` explicit level sites.
        latent_posterior: optional encoder ``f -> q(c|x)``, a NumPyro distribution of batch shape ``(B,)`` (e.g.
            :class:`~mulan_ppl.numpyro.KHot`); registered as ``"latent_posterior$params"`` when an ``nnx.Module``.
        latent_prior: the prior over ``c`` (e.g. :class:`~mulan_ppl.numpyro.UniformKHot`), batch shape ``()`` or
            ``(B,)``; required with ``latent_posterior``.

    Raises:
        ValueError: ``vocab_size < 2``; ``num_steps < 1``; an unknown ``parameterization``; a latent posterior
            without a prior or the reverse; (when the programs run) ``x`` that is not integer data in ``[0, V)`` of
            shape ``(B, *event)``.

    Example:
        >>> from numpyro import handlers
        >>> from numpyro.infer import TraceMeanField_ELBO
        >>> from mulan_ppl.schedules import FixedLinear
        >>> schedule = FixedLinear(gamma_min=-6.0, gamma_max=4.0)
        >>> programs = DiffusionPrograms(schedule, lambda z, t, g, c: jnp.zeros_like(z), vocab_size=4, num_steps=2)
        >>> x = jnp.array([[0, 3], [1, 2]])
        >>> trace = handlers.trace(handlers.seed(programs.guide, jax.random.key(0))).get_trace(x)
        >>> print([name for name, site in trace.items() if site["type"] == "sample"])
        ['z_1', 'z_1/2', 'z_0']
        >>> losses = TraceMeanField_ELBO(sum_sites=False).loss(jax.random.key(0), {}, programs.model,
        ...                                                    programs.guide, x)
        >>> print(sorted(programs.named_terms(losses)))
        ['diffusion', 'nelbo', 'prior', 'reconstruction']
    """

    def __init__(
        self,
        gamma_fn: Callable,
        denoiser: Callable,
        *,
        vocab_size: int,
        parameterization: str = "eps",
        num_steps: int | None = None,
        latent_posterior: Callable | None = None,
        latent_prior=None,
    ):
        where = "DiffusionPrograms"
        self.vocab_size = check_positive_int(where, "vocab_size", vocab_size, minimum=2)
        self.parameterization = check_one_of(where, "parameterization", parameterization, PARAMETERIZATIONS)
        self.num_steps = None if num_steps is None else check_positive_int(where, "num_steps", num_steps)
        if (latent_posterior is None) != (latent_prior is None):
            raise ValueError(f"`{where}`: `latent_posterior` and `latent_prior` must be given together.")
        for name, fn in (("gamma_fn", gamma_fn), ("denoiser", denoiser), ("latent_posterior", latent_posterior)):
            if fn is not None and not callable(fn):
                raise TypeError(f"`{where}`: `{name}` must be callable; got {type(fn).__name__}.")
        self.gamma_fn = gamma_fn
        self.denoiser = denoiser
        self.latent_posterior = latent_posterior
        self.latent_prior = latent_prior

    @property
    def level_sites(self) -> tuple[str, ...]:
        """Names of the diffusion-level sites below ``z_1``, top-down (``("z_0",)`` when collapsed)."""
        if self.num_steps is None:
            return ("z_0",)
        T = self.num_steps
        return tuple(f"z_{i}/{T}" for i in range(T - 1, 0, -1)) + ("z_0",)

    @property
    def sites(self) -> tuple[str, ...]:
        """All sample sites in top-down order: ``c`` (with a latent), ``z_1``, the levels, ``x``."""
        head = ("c",) if self.latent_posterior is not None else ()
        return head + ("z_1",) + self.level_sites + ("x",)

    def named_terms(self, site_losses: dict) -> dict:
        """Groups per-site losses into the terms of :meth:`mulan_ppl.hvae.TopDownDiffusion.elbo_terms`.

        Args:
            site_losses: negative-ELBO contributions by site name, e.g. ``TraceMeanField_ELBO(sum_sites=False)``'s
                batch sums or :meth:`~mulan_ppl.numpyro.DiffusionELBO.site_terms`' per-example values.

        Returns:
            ``reconstruction`` (site ``x``), ``prior`` (``z_1``), ``diffusion`` (the sum of the level sites),
            ``latent`` (``c``, with a latent) and ``nelbo`` (their sum).
        """
        terms = {"reconstruction": site_losses["x"], "prior": site_losses["z_1"],
                 "diffusion": sum(site_losses[name] for name in self.level_sites)}
        if self.latent_posterior is not None:
            terms["latent"] = site_losses["c"]
        terms["nelbo"] = sum(terms.values())
        return terms

    def _data(self, x, where: str):
        x = check_integer_data(where, "x", x, self.vocab_size)
        if x.ndim < 1:
            raise ValueError(f"`{where}`: `x` must have shape (batch, *event); got x.shape={x.shape}.")
        return x, core.encode_integers(x, self.vocab_size)

    def _times(self, f):
        T, batch = self.num_steps, f.shape[0]
        return [jnp.full((batch,), i / T, f.dtype) for i in range(T + 1)]

    def model(self, x: jax.Array) -> None:
        """The generative program ``p(c) p(z_1) p(levels | z_1, c) p(x | z_0, c)``, with ``x`` observed.

        Args:
            x: integer data of shape ``(B, *event)`` in ``[0, vocab_size)``.
        """
        x, f = self._data(x, "DiffusionPrograms.model")
        batch, event_shape = f.shape[0], f.shape[1:]
        gamma_fn = _bind(self.gamma_fn, "gamma_fn")
        denoiser = _bind(self.denoiser, "denoiser")
        with numpyro.plate("data", batch):
            c = numpyro.sample("c", self.latent_prior) if self.latent_prior is not None else None
            z_t = numpyro.sample("z_1", dist.Normal(jnp.zeros_like(f), 1.0).to_event(len(event_shape)))
            if self.num_steps is None:
                chain = ReverseChain(z_t, gamma_fn, denoiser, parameterization=self.parameterization, context=c)
                z_0 = numpyro.sample("z_0", chain)
            else:
                times = self._times(f)
                gammas = [evaluate_schedule(gamma_fn, t, c, event_shape) for t in times]
                for i, name in zip(range(self.num_steps, 0, -1), self.level_sites, strict=True):
                    prediction = denoiser(z_t, times[i], jnp.broadcast_to(gammas[i], z_t.shape), c)
                    p = ReverseTransition.from_prediction(z_t, prediction, gammas[i - 1], gammas[i],
                                                          parameterization=self.parameterization)
                    z_t = numpyro.sample(name, p)
                z_0 = z_t
            gamma_0 = evaluate_schedule(gamma_fn, jnp.zeros((batch,), f.dtype), c, event_shape)
            numpyro.sample("x", DiscretizedGaussianDecoder(z_0, gamma_0, self.vocab_size), obs=x)

    def guide(self, x: jax.Array) -> None:
        """The inference program ``q(c|x) q(z_1|x, c) q(levels | z_1, x, c)``.

        Args:
            x: integer data of shape ``(B, *event)`` in ``[0, vocab_size)``.
        """
        x, f = self._data(x, "DiffusionPrograms.guide")
        batch, event_shape = f.shape[0], f.shape[1:]
        gamma_fn = _bind(self.gamma_fn, "gamma_fn")
        with numpyro.plate("data", batch):
            c = None
            if self.latent_posterior is not None:
                c = numpyro.sample("c", _bind(self.latent_posterior, "latent_posterior")(f))
            gamma_1 = evaluate_schedule(gamma_fn, jnp.ones((batch,), f.dtype), c, event_shape)
            z_t = numpyro.sample("z_1", ForwardMarginal(f, gamma_1))
            if self.num_steps is None:
                gamma_0 = evaluate_schedule(gamma_fn, jnp.zeros((batch,), f.dtype), c, event_shape)
                numpyro.sample("z_0", ForwardMarginal(f, gamma_0))
                return
            gammas = [evaluate_schedule(gamma_fn, t, c, event_shape) for t in self._times(f)]
            for i, name in zip(range(self.num_steps, 0, -1), self.level_sites, strict=True):
                z_t = numpyro.sample(name, TopDownPosterior(z_t, f, gammas[i - 1], gammas[i]))
