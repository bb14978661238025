"""``DiffusionELBO``: NumPyro's mean-field ELBO with the diffusion term of :func:`mulan_ppl.hvae.diffusion_term`.

This module imports :mod:`mulan_ppl.hvae` (and through it TensorFlow Probability); ``mulan_ppl.numpyro`` exposes
:class:`DiffusionELBO` lazily, so importing the NumPyro distributions does not.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
from numpyro.distributions.kl import kl_divergence
from numpyro.distributions.util import scale_and_mask
from numpyro.handlers import replay, seed, substitute, trace
from numpyro.infer.elbo import ELBO
from numpyro.util import check_model_guide_match

from mulan_ppl._validation import check_positive_int
from mulan_ppl.hvae import diffusion_term
from mulan_ppl.numpyro.gaussian import ForwardMarginal
from mulan_ppl.numpyro.programs import ReverseChain

__all__ = ["DiffusionELBO"]

# Salts of the per-particle keys (`fold_in(particle_key, salt)`); the j-th levels site uses `_LEVELS_SALT + j`.
_GUIDE_SALT, _MODEL_SALT, _LEVELS_SALT = 0, 1, 2


def _log_prob(site) -> jax.Array:
    """Per-example log-density of a site, scaled and masked as NumPyro's ELBOs do."""
    fn, value = site["fn"], site["value"]
    log_prob = fn.log_prob(value, site["intermediates"]) if site["intermediates"] else fn.log_prob(value)
    return scale_and_mask(log_prob, site["scale"])


class DiffusionELBO(ELBO):
    r"""Mean-field ELBO of a top-down diffusion HVAE, with the diffusion levels estimated by one random level or in
    continuous time.

    Mathematical details:
        For a model/guide pair (e.g. :class:`~mulan_ppl.numpyro.DiffusionPrograms`) the loss is
        :math:`-\mathrm{ELBO} = \sum_{\text{sites}} \ell_{\text{site}}` with, per site,

        * an observed model site: :math:`\ell = -\log p(x \mid \cdot)` (the decoder's log-prob);
        * a latent site whose model distribution is a :class:`~mulan_ppl.numpyro.ReverseChain` and whose guide
          distribution is :math:`q(z_0|x) =` :class:`~mulan_ppl.numpyro.ForwardMarginal`: the diffusion term
          :math:`\ell = \mathcal L_{\mathrm{diff}}` of :func:`mulan_ppl.hvae.diffusion_term` with the chain's
          schedule, denoiser, parameterization and context and the guide's data. ``num_steps=T`` gives
          :math:`T\,\mathrm{KL}` at one random level :math:`(s,t) = ((i-1)/T, i/T)` (every level with
          ``all_levels=True``); ``num_steps=None`` the continuous-time limit
          :math:`-\partial_s \mathrm{KL}(q(z_s|z_t,x)\,\|\,p(z_s|z_t))|_{s=t}`;
        * any other latent site: the KL :math:`\mathrm{KL}(q \,\|\, p)` registered in
          ``numpyro.distributions.kl.kl_divergence`` at the guide's upstream values, as in
          ``TraceMeanField_ELBO`` (the prior KL at ``z_1``, the latent KL at ``c``, the per-step KLs of explicit
          levels); else a ``surrogate_kl()`` of the guide distribution, else, with ``allow_mc_kl=True``, the
          one-sample estimate :math:`\log q(z) - \log p(z)`;
        * a guide-only site marked ``infer={"is_auxiliary": True}``: :math:`\ell = \log q`.

        Every value is multiplied by the site's ``scale`` (``handlers.scale``, plate subsampling). The loss is the
        mean over particles of the sum over sites and examples.

        Randomness comes only from ``rng_key``: particle ``p`` uses ``k = fold_in(rng_key, p)``; within it the
        guide is seeded with ``fold_in(k, 0)``, the model with ``fold_in(k, 1)``, and the ``j``-th levels site (in
        model order, from 0) passes ``fold_in(k, 2 + j)`` to :func:`~mulan_ppl.hvae.diffusion_term`. The object
        holds no state; it can be used with ``numpyro.infer.SVI`` and any Optax optimiser.

    Args:
        num_steps: ``None`` for the continuous-time diffusion term, or the number of steps ``T >= 1``.
        num_particles: number of particles ``P >= 1`` averaged in the loss.
        vectorize_particles: ``vmap`` over particles (True), ``lax.map`` (False), or a callable.
        all_levels: with ``num_steps``, sum the KLs of all T levels (T denoiser calls) instead of one.
        antithetic: low-discrepancy diffusion times over the batch (see :func:`mulan_ppl.hvae.sample_times`).
        sum_sites: return the summed loss (True) or a dict of per-site losses (False), as
            ``TraceMeanField_ELBO``.
        allow_mc_kl: use :math:`\log q(z) - \log p(z)` for a latent site with no registered KL (one sample).

    Raises:
        ValueError: ``num_steps < 1``, ``num_particles < 1``, ``all_levels`` without ``num_steps``; when the loss
            is evaluated, a latent site with no registered KL (unless ``allow_mc_kl``), or a ``ReverseChain`` site
            whose guide distribution is not a ``ForwardMarginal``.

    Example:
        >>> import optax
        >>> from numpyro.infer import SVI
        >>> from mulan_ppl.numpyro.programs import DiffusionPrograms
        >>> from mulan_ppl.schedules import FixedLinear
        >>> schedule = FixedLinear(gamma_min=-6.0, gamma_max=4.0)
        >>> programs = DiffusionPrograms(schedule, lambda z, t, g, c: jnp.zeros_like(z), vocab_size=4)
        >>> x = jnp.array([[0, 3], [1, 2]])
        >>> elbo = DiffusionELBO(sum_sites=False)
        >>> losses = elbo.loss(jax.random.key(0), {}, programs.model, programs.guide, x)
        >>> print(sorted(losses))
        ['x', 'z_0', 'z_1']
        >>> svi = SVI(programs.model, programs.guide, optax.adam(1e-3), DiffusionELBO(num_steps=8))
        >>> state = svi.init(jax.random.key(1), x)
        >>> print(svi.evaluate(state, x).shape)
        ()

    References:
        1. Kingma, Salimans, Poole, Ho. Variational Diffusion Models. https://arxiv.org/abs/2107.00630
        2. Sahoo, Gokaslan, De Sa, Kuleshov. Diffusion Models With Learned Adaptive Noise (MuLAN).
           https://arxiv.org/abs/2312.13236
    """

    def __init__(
        self,
        num_steps: int | None = None,
        *,
        num_particles: int = 1,
        vectorize_particles=True,
        all_levels: bool = False,
        antithetic: bool = True,
        sum_sites: bool = True,
        allow_mc_kl: bool = False,
    ):
        where = "DiffusionELBO"
        self.num_steps = None if num_steps is None else check_positive_int(where, "num_steps", num_steps)
        num_particles = check_positive_int(where, "num_particles", num_particles)
        if all_levels and num_steps is None:
            raise ValueError(f"`{where}`: `all_levels` needs an integer `num_steps`; got all_levels=True, "
                             "num_steps=None.")
        self.all_levels = bool(all_levels)
        self.antithetic = bool(antithetic)
        self.sum_sites = bool(sum_sites)
        self.allow_mc_kl = bool(allow_mc_kl)
        super().__init__(num_particles=num_particles, vectorize_particles=vectorize_particles)

    def _particle(self, key, param_map, model, guide, args, kwargs):
        """Per-site, per-example losses of one particle, and the mutable state its programs wrote."""
        params = dict(param_map)
        guide_trace = trace(substitute(seed(guide, jax.random.fold_in(key, _GUIDE_SALT)), data=param_map)
                            ).get_trace(*args, **kwargs)
        mutable = {name: site["value"] for name, site in guide_trace.items() if site["type"] == "mutable"}
        params.update(mutable)
        seeded_model = seed(model, jax.random.fold_in(key, _MODEL_SALT))
        model_trace = trace(substitute(replay(seeded_model, guide_trace), data=params)).get_trace(*args, **kwargs)
        mutable.update({name: site["value"] for name, site in model_trace.items() if site["type"] == "mutable"})
        check_model_guide_match(model_trace, guide_trace)
        _warn_on_order(model_trace, guide_trace)

        losses, num_levels = {}, 0
        for name, model_site in model_trace.items():
            if model_site["type"] != "sample":
                continue
            if model_site["is_observed"]:
                losses[name] = -_log_prob(model_site)
                continue
            guide_site = guide_trace[name]
            if isinstance(model_site["fn"], ReverseChain):
                level_key = jax.random.fold_in(key, _LEVELS_SALT + num_levels)
                losses[name] = scale_and_mask(self._levels(name, guide_site["fn"], model_site["fn"], level_key),
                                              guide_site["scale"])
                num_levels += 1
            else:
                losses[name] = self._kl(name, guide_site, model_site)
        for name, site in guide_trace.items():
            if site["type"] == "sample" and name not in model_trace:
                losses[name] = _log_prob(site)
        return losses, mutable

    def _levels(self, name, q, p: ReverseChain, key) -> jax.Array:
        if not isinstance(q, ForwardMarginal):
            raise ValueError(
                f"`DiffusionELBO`: the guide distribution at site {name!r}, whose model distribution is a "
                f"ReverseChain, must be a ForwardMarginal q(z_0 | x); got {type(q).__name__}."
            )
        return diffusion_term(q.x, key, p.gamma_fn, p.denoiser, parameterization=p.parameterization,
                              context=p.context, num_steps=self.num_steps, all_levels=self.all_levels,
                              antithetic=self.antithetic)

    def _kl(self, name, guide_site, model_site) -> jax.Array:
        q, p = guide_site["fn"], model_site["fn"]
        try:
            kl = kl_divergence(q, p)
        except NotImplementedError:
            if hasattr(q, "surrogate_kl"):
                kl = q.surrogate_kl()
            elif self.allow_mc_kl:
                return _log_prob(guide_site) - _log_prob(model_site)
            else:
                raise ValueError(
                    f"`DiffusionELBO`: no KL is registered between {type(q).__name__} (guide) and "
                    f"{type(p).__name__} (model) at site {name!r}; register one with "
                    "`numpyro.distributions.kl.kl_divergence.register`, or pass `allow_mc_kl=True` for the "
                    "one-sample estimate log q(z) - log p(z)."
                ) from None
        return scale_and_mask(kl, guide_site["scale"])

    def site_terms(self, rng_key: jax.Array, param_map: dict, model, guide, *args, **kwargs) -> dict:
        """Per-site, per-example negative-ELBO contributions of the first particle of :meth:`loss`.

        Args:
            rng_key: the key :meth:`loss` would receive (particle 0 uses ``fold_in(rng_key, 0)``).
            param_map: parameter values by site name (``svi.get_params(state)``; ``{}`` for the initial values).
            model: the model program.
            guide: the guide program.
            *args: arguments of the programs (the data).
            **kwargs: keyword arguments of the programs.

        Returns:
            ``{site name: values}``, each of the site's batch shape (``(B,)`` for the programs of
            :class:`~mulan_ppl.numpyro.DiffusionPrograms`, whose ``named_terms`` groups them as
            :meth:`mulan_ppl.hvae.TopDownDiffusion.elbo_terms`). With ``num_particles=1`` the batch sums of the
            values add up to :meth:`loss`.
        """
        losses, _ = self._particle(jax.random.fold_in(rng_key, 0), param_map, model, guide, args, kwargs)
        return losses

    def loss_with_mutable_state(self, rng_key: jax.Array, param_map: dict, model, guide, *args, **kwargs) -> dict:
        """The negative ELBO (a scalar, or per-site sums with ``sum_sites=False``) and the programs' mutable state.

        Args:
            rng_key: typed PRNG key; the only source of randomness (see the class docstring).
            param_map: parameter values by site name.
            model: the model program.
            guide: the guide program.
            *args: arguments of the programs (the data).
            **kwargs: keyword arguments of the programs.

        Returns:
            ``{"loss": ..., "mutable_state": ...}`` as ``numpyro.infer.elbo.ELBO`` specifies.
        """

        def particle(key):
            losses, mutable = self._particle(key, param_map, model, guide, args, kwargs)
            sums = {name: jnp.sum(value) for name, value in losses.items()}
            return (sum(sums.values(), start=jnp.array(0.0)) if self.sum_sites else sums), mutable

        if self.num_particles == 1:
            loss, mutable = particle(jax.random.fold_in(rng_key, 0))
            return {"loss": loss, "mutable_state": mutable or None}
        keys = jax.vmap(lambda i: jax.random.fold_in(rng_key, i))(jnp.arange(self.num_particles))
        losses, mutable = self.vectorize_particles_fn(particle, keys)
        if mutable:
            warnings.warn("`DiffusionELBO`: mutable state is ignored when num_particles > 1.", stacklevel=2)
        return {"loss": jax.tree.map(jnp.mean, losses), "mutable_state": None}


def _warn_on_order(model_trace, guide_trace) -> None:
    """Warns when shared latent sites are ordered differently (the mean-field check of ``TraceMeanField_ELBO``)."""
    model_sites = [n for n, s in model_trace.items() if s["type"] == "sample" and n in guide_trace]
    guide_sites = [n for n, s in guide_trace.items() if s["type"] == "sample" and n in model_trace]
    if model_sites != guide_sites:
        warnings.warn(
            "`DiffusionELBO`: model and guide sample sites are in different orders, so the mean-field condition "
            f"could not be verified; model: {model_sites}, guide: {guide_sites}.",
            stacklevel=3,
        )
