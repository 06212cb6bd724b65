"""Generative Gradient Leakage (GGL): CMA-ES in a generator's latent space.

Li, Zhang, Liu, Liu, "Auditing privacy defenses in federated learning via generative
gradient leakage", CVPR 2022; as rerun by the "not easy" study (Zhu, Huang, Xie 2024,
Table II: batch 1, 25,000 CMA-ES evaluations, pretrained generator).

For each victim the attacker searches a latent ``z`` (128-dimensional) of a generator
trained on the data domain (:mod:`jgi.models.generator`) so that the update of the
generated image ``G(z)`` under the guessed label matches the observed one:

    loss(z) = D(update(G(z), y_hat), observed) + kl_weight * KL(z)

- ``D`` (``distance="layer_l2"``): the squared L2 difference of each parameter
  tensor's gradient, summed per tensor and averaged over the tensors, as in the
  study's GGL port (``fleak/attack/ggl.py``: ``loss /= len(dummy_grads)``). "l2" (the
  plain sum) and "cosine" are offered too.
- ``KL(z) = -0.5 (1 + log var(z) - mean(z)^2 - var(z))`` over the latent's own
  entries (a scalar: it keeps z's empirical mean and variance near N(0, 1)), weight 0.1,
  as in the same port.
- Optimiser: CMA-ES (Hansen 2016) from ``evosax`` (``CMA_ES``, its default weights and
  learning rates), the search starting at ``z = 0`` with step size 1, as nevergrad's
  "CMA" does in the port. The official GGL code runs 500 generations of 50 candidates;
  the study runs the same 25,000 evaluations (:class:`GGLConfig` defaults: population
  50 x 500 generations).
- Label: iDLG's guess from the last layer (:func:`jgi.attacks.labels.idlg_labels`),
  or labels given. The study notes that on a multi-step FedAvg update this guess is
  close to random; it is kept because it is GGL's.
- ``reapply_defense=True`` is GGL's adaptive attack on a defended update (section 4.2
  of the GGL paper): the trial gradient goes through the client's own defenses
  (:func:`jgi.fl.client_update` with the :class:`~jgi.defenses.DefenseStack`) before
  the distance. Choice where the paper is silent for jgi's stack: DP noise is replaced
  by its mean (zeros; the clipping and averaging stay), pruning keeps the trial
  gradient's own largest entries, model noise (dropout, bottleneck eps) is drawn fresh
  per evaluation.

Everything is vmapped over victims: one CMA-ES state per victim, ``ask``/``tell``
vmapped, the population's losses vmapped (or mapped in slices of ``eval_batch`` when
memory is short). Images come back in [0, 1] pixel units (the generator's range); the
model sees them normalised with ``input_stats`` (mean, std), as the client did.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jgi.attacks.distances import cosine_distance, l2_distance
from jgi.attacks.labels import idlg_labels
from jgi.attacks.runner import with_victim_axis
from jgi.defenses.stack import NO_DEFENSE, DefenseStack
from jgi.fl.client import ClientRandomness, client_update
from jgi.models import generator as gen
from jgi.models.interface import Model, Params

DISTANCES = ("layer_l2", "l2", "cosine")


@dataclasses.dataclass(frozen=True)
class GGLConfig:
    """Hyperparameters of GGL (defaults: the official code's and the study's).

    Attributes:
      population: CMA-ES candidates per generation (GGL's code: 50).
      generations: CMA-ES generations (GGL's code: 500; 50 x 500 = 25,000 evaluations,
        the study's Table II).
      sigma_init: initial CMA-ES step size (nevergrad's default, 1).
      kl_weight: weight of the latent KL term (study's port: 0.1).
      distance: "layer_l2" (per-tensor squared L2, mean over tensors), "l2" or "cosine".
      reapply_defense: pass trial gradients through the client's defense stack.
      eval_batch: candidates whose gradients are computed at once per victim (None: the
        whole population; smaller saves memory on large models).
      chunk: generations per compiled call (a progress bar step).
    """

    population: int = 50
    generations: int = 500
    sigma_init: float = 1.0
    kl_weight: float = 0.1
    distance: str = "layer_l2"
    reapply_defense: bool = False
    eval_batch: int | None = None
    chunk: int = 25

    def __post_init__(self):
        if self.population < 4:
            raise ValueError(f"GGLConfig: population must be >= 4 for CMA-ES, got "
                             f"{self.population} (GGL uses 50).")
        if self.generations < 1:
            raise ValueError(f"GGLConfig: generations must be >= 1, got {self.generations} "
                             "(GGL uses 500).")
        if self.sigma_init <= 0:
            raise ValueError(f"GGLConfig: sigma_init must be > 0, got {self.sigma_init}.")
        if self.kl_weight < 0:
            raise ValueError(f"GGLConfig: kl_weight must be >= 0, got {self.kl_weight}.")
        if self.distance not in DISTANCES:
            raise ValueError(f"GGLConfig: unknown distance {self.distance!r}; valid: "
                             f"{', '.join(DISTANCES)}.")
        if self.eval_batch is not None and not 1 <= self.eval_batch <= self.population:
            raise ValueError(f"GGLConfig: eval_batch must be in [1, population="
                             f"{self.population}] or None, got {self.eval_batch}.")
        if self.chunk < 1:
            raise ValueError(f"GGLConfig: chunk must be >= 1, got {self.chunk}.")

    @property
    def evaluations(self) -> int:
        return self.population * self.generations


class GenerativeResult(NamedTuple):
    """What a generative-prior attack returns.

    Attributes:
      images: reconstructions (V, B, H, W, C) in [0, 1] pixel units.
      labels: the labels used (V, B).
      loss: the best objective value per victim (V,).
      latents: the best latents (V, B, latent_dim).
    """

    images: jax.Array
    labels: jax.Array
    loss: jax.Array
    latents: jax.Array


def layer_l2_distance(a: Any, b: Any) -> jax.Array:
    """Mean over parameter tensors of the summed squared difference (GGL's port)."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return sum(jnp.sum(jnp.square(x - y)) for x, y in zip(la, lb, strict=True)) / len(la)


def latent_kl(z: jax.Array) -> jax.Array:
    """``-0.5 (1 + log var - mean^2 - var)`` of the entries of ``z`` (population var)."""
    mean, var = jnp.mean(z), jnp.var(z)
    return -0.5 * (1.0 + jnp.log(var + 1e-10) - mean ** 2 - var)


def _distance(name):
    return {"layer_l2": layer_l2_distance, "l2": l2_distance,
            "cosine": cosine_distance}[name]


def _normalizer(input_stats):
    if input_stats is None:
        return lambda x: x
    mean, std = (jnp.asarray(s, jnp.float32) for s in input_stats)
    return lambda x: (x - mean) / std


def make_loss(model: Model, generator_spec: gen.GeneratorSpec, config: GGLConfig, *,
              stack: DefenseStack = NO_DEFENSE, input_stats=None):
    """``loss(z, target, label, gen_params, params, key) -> scalar`` for one candidate.

    ``z``: (latent,); ``target``: one victim's observed update; ``label``: int.
    """
    _, g_apply = gen.generator(generator_spec)
    dist = _distance(config.distance)
    norm = _normalizer(input_stats)
    shape = generator_spec.image_shape
    use_stack = stack if config.reapply_defense else NO_DEFENSE

    def loss(z, target, label, gen_params, params, key):
        x = norm(g_apply(gen_params, z[None]))
        noise = model.sample_noise(key, shape, 1)
        dp = (jax.tree.map(jnp.zeros_like, params) if use_stack.dp is not None else None)
        update = client_update(model, params, x, label[None],
                               ClientRandomness(model=noise, dp=dp), use_stack)
        return dist(update, target) + config.kl_weight * latent_kl(z)

    return loss


def _strategy(config: GGLConfig, latent_dim: int):
    from evosax.algorithms import CMA_ES  # pylint: disable=g-import-not-at-top
    es = CMA_ES(population_size=config.population, solution=jnp.zeros(latent_dim))
    es_params = es.default_params.replace(std_init=jnp.asarray(config.sigma_init))
    return es, es_params


def make_search(model: Model, generator_spec: gen.GeneratorSpec, config: GGLConfig, *,
                stack: DefenseStack = NO_DEFENSE, input_stats=None):
    """``(init, run_chunk)`` of the vmapped CMA-ES search.

    ``init(keys (V,)) -> states``; ``run_chunk(states, keys (V,), targets, labels,
    gen_params, params, generations)`` runs ``generations`` generations for every
    victim (jit; ``generations`` static).
    """
    es, es_params = _strategy(config, generator_spec.latent_dim)
    loss = make_loss(model, generator_spec, config, stack=stack, input_stats=input_stats)

    def population_loss(pop, target, label, gen_params, params, key):
        keys = jax.random.split(key, pop.shape[0])

        def one(args):
            z, k = args
            return loss(z, target, label, gen_params, params, k)
        if config.eval_batch is None or config.eval_batch >= pop.shape[0]:
            return jax.vmap(one)((pop, keys))
        return jax.lax.map(one, (pop, keys), batch_size=config.eval_batch)

    def init_one(key):
        return es.init(key, jnp.zeros(generator_spec.latent_dim), es_params)

    def generation(state, key, target, label, gen_params, params):
        k_ask, k_eval, k_tell = jax.random.split(key, 3)
        pop, state = es.ask(k_ask, state, es_params)
        fitness = population_loss(pop, target, label, gen_params, params, k_eval)
        state, _ = es.tell(k_tell, pop, fitness, state, es_params)
        return state

    @functools.partial(jax.jit, static_argnames=("generations",))
    def run_chunk(states, keys, targets, labels, gen_params, params, generations):
        def one_victim(state, key, target, label):
            def body(s, k):
                return generation(s, k, target, label, gen_params, params), None
            state, _ = jax.lax.scan(body, state, jax.random.split(key, generations))
            return state
        return jax.vmap(one_victim)(states, keys, targets, labels)

    return jax.jit(jax.vmap(init_one)), run_chunk


def reconstruct(model: Model, params: Params, updates: Any, key: jax.Array,
                config: GGLConfig = GGLConfig(), *, generator: tuple[gen.GeneratorSpec, Any],
                labels: jax.Array | None = None, stack: DefenseStack = NO_DEFENSE,
                input_stats=None, progress: bool | str = False,
                on_chunk: Callable[[int, jax.Array, jax.Array], None] | None = None
                ) -> GenerativeResult:
    """Runs GGL against every victim's update at once.

    Args:
      model: the attacked model.
      params: the parameters the clients started from.
      updates: observed updates with a leading victim axis (one update without it is
        accepted: :func:`~jgi.attacks.runner.with_victim_axis`). A FedAvg weight delta
        is treated as a gradient, as the study does.
      key: PRNG key of the search.
      config: :class:`GGLConfig`.
      generator: ``(spec, params)`` of a generator (:func:`jgi.models.generator.
        load_generator`), trained on the victims' domain for the attack to work.
      labels: (V,) labels, or None for iDLG's guess per victim.
      stack: the client's defenses; used on trial gradients when
        ``config.reapply_defense``.
      input_stats: ``(mean, std)`` per channel that map [0, 1] images to the model's
        input (the dataset's normalisation), or None when the model takes [0, 1].
      progress: a tqdm bar over generations (a string is its description).
      on_chunk: called after every ``config.chunk`` generations with ``(evaluations
        so far per victim, best latents (V, latent), best losses (V,))``: the search's
        trajectory (e.g. quality against evaluations) at no extra compiled work.

    Returns:
      :class:`GenerativeResult` with B = 1 image per victim.
    """
    spec, gen_params = generator
    if not isinstance(spec, gen.GeneratorSpec):
        raise TypeError("ggl.reconstruct: generator must be (GeneratorSpec, params), e.g. "
                        "jgi.models.generator.load_generator('mnist').")
    updates = with_victim_axis(updates, params)
    num_victims = jax.tree.leaves(updates)[0].shape[0]
    if labels is None:
        labels = idlg_labels(updates, model.classifier)
    labels = jnp.asarray(labels, jnp.int32).reshape(num_victims)
    init, run_chunk = make_search(model, spec, config, stack=stack, input_stats=input_stats)
    k_init, k_run = jax.random.split(key)
    states = init(jax.random.split(k_init, num_victims))
    bar = None
    if progress:
        from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
        bar = tqdm(total=config.generations, unit="gen",
                   desc=progress if isinstance(progress, str) else "GGL")
    done = 0
    while done < config.generations:
        n = min(config.chunk, config.generations - done)
        keys = jax.random.split(jax.random.fold_in(k_run, done), num_victims)
        states = run_chunk(states, keys, updates, labels, gen_params, params, n)
        done += n
        if on_chunk is not None:
            on_chunk(done * config.population, states.best_solution, states.best_fitness)
        if bar is not None:
            bar.update(n)
            bar.set_postfix(loss=f"{float(jnp.mean(states.best_fitness)):.3g}")
    if bar is not None:
        bar.close()
    _, g_apply = gen.generator(spec)
    z = states.best_solution
    images = g_apply(gen_params, z)
    return GenerativeResult(images=images[:, None], labels=labels[:, None],
                            loss=states.best_fitness, latents=z[:, None])


def evaluation_loss(model: Model, params: Params, updates: Any, latents: jax.Array, *,
                    generator: tuple[gen.GeneratorSpec, Any], labels: jax.Array,
                    config: GGLConfig = GGLConfig(), stack: DefenseStack = NO_DEFENSE,
                    input_stats=None, key: jax.Array | None = None) -> jax.Array:
    """GGL's objective of given latents per victim, in one compiled call.

    ``latents``: (V, latent) -> (V,) losses, or (N, V, latent) -> (N, V) (e.g. N random
    latents per victim, the baseline a search must beat).
    """
    spec, gen_params = generator
    updates = with_victim_axis(updates, params)
    loss = make_loss(model, spec, config, stack=stack, input_stats=input_stats)
    key = jax.random.key(0) if key is None else key
    latents = jnp.asarray(latents, jnp.float32)
    v = latents.shape[-2]
    labels = jnp.asarray(labels, jnp.int32).reshape(v)
    per_victim = jax.vmap(loss, in_axes=(0, 0, 0, None, None, 0))

    @jax.jit
    def run(latents, updates, labels, gen_params, params, key):
        if latents.ndim == 2:
            return per_victim(latents, updates, labels, gen_params, params,
                              jax.random.split(key, v))
        keys = jax.random.split(key, latents.shape[0] * v).reshape(latents.shape[0], v)
        return jax.vmap(per_victim, in_axes=(0, None, None, None, None, 0))(
            latents, updates, labels, gen_params, params, keys)

    return run(latents, updates, labels, gen_params, params, key)
