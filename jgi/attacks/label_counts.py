"""How many examples of each class a client trained on, from the update it shared.

One interface, :func:`infer_counts`, several published methods; each returns integer
counts per class that sum to the client's number of samples ``n``. Every method reads
the classifier (last dense layer, ``model.classifier``, weights ``w`` of shape
(features, classes)) of the *summed step gradient*

    G = update                       for a one-step gradient observation,
    G = update / lr = sum_t g_t      for a weight change W_0 - W_T of plain SGD

(:func:`gradient_sum`; with momentum, weight decay or Adam it is only approximately
the sum of the step gradients, and the methods inherit that error). For softmax and
cross-entropy one example's logit gradient is ``p - onehot(y)``, so a batch-mean step
gradient of the classifier is ``dW[:, c] = mean_i (p_ic - y_ic) f_i`` with ``f_i`` the
(non-negative, after ReLU) penultimate features.

Methods (``METHODS``):

- ``"idlg"``: Zhao et al. 2020 (iDLG), batch size 1: the one class whose gradient is
  negative (:func:`jgi.attacks.labels.idlg_labels`). For ``n > 1`` every sample gets
  that class (the method has no notion of counts).
- ``"yin"``: Yin et al. 2021 (GradInversion), unique labels: the ``n`` classes with
  the smallest row minimum of the classifier's weight gradient, one each. Where the
  paper is silent (``n > C``, unique labels impossible), classes in that order get
  ``n // C`` and the first ``n % C`` one more.
- ``"llg"``: Wainakh et al. 2022 (LLG, "User-level label leakage from gradients in
  federated learning", Algorithm 1, as in tklab-tud/LLG ``v1``): ``g_c`` the column sum
  of the weight gradient; every class with ``g_c < 0`` gets one label; the impact
  ``m = (sum of the negative g_c) / n * (1 + 1/C)`` is subtracted from each chosen
  class, then the remaining labels go one at a time to the current minimum of ``g``,
  subtracting ``m`` each time. With more negative classes than ``n`` only the ``n``
  most negative are taken (the original would predict more labels than samples).
- ``"geng"``: Geng et al. 2021 (zero-shot, "Towards general deep leakage in federated
  learning"): ``n_c = n * pbar_c - n * dW_c / (O * s)``, where ``dW_c`` is the column
  sum of ``G``, ``s`` the number of local steps (``G / s`` is the mean step gradient),
  ``pbar`` the mean softmax and ``O`` the mean summed penultimate activation over random
  dummy inputs N(0, 1) at the global parameters ``W_0``. This is DLF's ``aaai_st``.
- ``"dimitrov"``: Dimitrov et al. 2022 (DLF, "Data leakage in federated averaging",
  TMLR; the original JAX code eth-sri/fedavg_leakage ``calc_AAAI_label_stats`` /
  ``restore_labels`` with ``aaai_avg``): ``pbar`` (per class) and ``O`` computed at
  ``W_0`` and at ``W_T = W_0 - update``, linearly interpolated at the ``s = E *
  ceil(n / B)`` points ``j / s`` (``j = 0 .. s - 1``), the count formula above applied at
  each point and averaged over them, then rounded.
- ``"dimitrov_scalar"``: the port in the "not easy" study's code (BREADTH.md, trap 2):
  the same interpolation with the softmax averaged to one scalar (``1 / C``) instead of
  per class. Offered only to measure what the port loses.

iLRG (Ma et al. 2023, instance-wise label restoration) is not implemented: it solves
for every instance's softmax output from one batch-mean gradient whose classifier
gradient has rank ``n`` (batch at most the feature width) at an untrained model; a
FedAvg weight change is a sum of gradients at ``E * ceil(n / B)`` different parameter
points over ``n`` samples seen ``E`` times, for which its linear system does not hold,
and the one-step single-batch case is already exact with Geng's and Dimitrov's
formulas evaluated at the right point. RLU (Chen and Vikalo) needs an auxiliary data
set at the server and is not implemented either.

Rounding (:func:`round_counts`, where the methods give real numbers): negative
estimates are set to 0, the rest rescaled to sum to ``n``, floored, and the remaining
labels given to the classes with the largest fractional parts. Softmax
cross-entropy's raw counts already sum to ``n`` (the class sums of ``p - y`` cancel),
so the rescaling only acts when some estimate was negative; the original code instead
floors and then adds or removes single labels by fractional part, which is the same
when no estimate is negative.

Scores: :func:`count_error` (``sum_c |c_hat - c| / n``; DLF's ``target_errors`` is half
of it times ``n``) and :func:`label_accuracy` (the fraction of the ``n`` labels the
predicted multiset gets right, ``sum_c min(c_hat, c) / n``, as LLG scores it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jgi.attacks.labels import idlg_labels
from jgi.fl.client import num_classes as _num_classes
from jgi.fl.observation import Observation
from jgi.models.interface import Model, Params

METHODS = ("idlg", "yin", "llg", "geng", "dimitrov", "dimitrov_scalar")
DUMMY_METHODS = ("geng", "dimitrov", "dimitrov_scalar")  # need dummy inputs and a key


@dataclasses.dataclass(frozen=True)
class LabelCountConfig:
    """Settings of the methods that feed dummy inputs through the model.

    Attributes:
      num_dummies: random inputs whose mean softmax and penultimate activation stand in
        for the client's data (the original DLF code's ``restore_label_samp``; its
        value is not in the published scripts, jgi uses 256).
      dummy_std: standard deviation of the dummies, N(0, std^2) in the model's
        normalised input space (the original: N(0, 1)).
    """

    num_dummies: int = 256
    dummy_std: float = 1.0

    def __post_init__(self):
        if self.num_dummies < 1:
            raise ValueError(f"LabelCountConfig.num_dummies must be >= 1, got "
                             f"{self.num_dummies}.")
        if self.dummy_std <= 0:
            raise ValueError(f"LabelCountConfig.dummy_std must be > 0, got {self.dummy_std}.")


def gradient_sum(observation: Observation) -> Params:
    """The summed step gradient ``G`` the observation implies (see the module docstring).

    A one-step gradient is returned as is; a weight change ``W_0 - W_T`` is divided by
    the round's learning rate (exactly the sum of the step gradients for plain SGD).
    """
    if observation.kind == "gradient":
        return observation.update
    lr = observation.local.learning_rate(observation.round)
    return jax.tree.map(lambda u: u / lr, observation.update)


def counts_of(labels: jax.Array, num_classes: int) -> jax.Array:
    """Counts per class (C,) of int labels (n,)."""
    return jnp.zeros(num_classes, jnp.int32).at[labels].add(1)


def labels_from_counts(counts: jax.Array, num_samples: int) -> jax.Array:
    """The label list (n,) of counts per class, sorted by class (jittable)."""
    classes = jnp.arange(counts.shape[-1], dtype=jnp.int32)
    return jnp.repeat(classes, counts, total_repeat_length=num_samples)


def count_error(predicted: jax.Array, true: jax.Array) -> jax.Array:
    """``sum_c |c_hat - c| / n`` over the last axis (0: exact; at most 2)."""
    n = jnp.sum(true, axis=-1)
    return jnp.sum(jnp.abs(predicted - true), axis=-1) / n


def label_accuracy(predicted: jax.Array, true: jax.Array) -> jax.Array:
    """Fraction of the labels the predicted counts get right, ``sum_c min / n``."""
    n = jnp.sum(true, axis=-1)
    return jnp.sum(jnp.minimum(predicted, true), axis=-1) / n


def round_counts(raw: jax.Array, num_samples: int) -> jax.Array:
    """Integer counts >= 0 summing to ``num_samples`` nearest the real estimates ``raw``.

    Negative estimates become 0, the rest is rescaled to sum ``num_samples`` (uniform
    when every estimate is <= 0), floored, and the remainder goes to the largest
    fractional parts (largest-remainder rounding).
    """
    raw = jnp.maximum(raw, 0.0)
    total = jnp.sum(raw)
    c = raw.shape[-1]
    scaled = jnp.where(total > 0, raw * num_samples / jnp.where(total > 0, total, 1.0),
                       jnp.full_like(raw, num_samples / c))
    floor = jnp.floor(scaled)
    remainder = num_samples - jnp.sum(floor)
    rank = jnp.argsort(jnp.argsort(-(scaled - floor)))
    return (floor + (rank < remainder)).astype(jnp.int32)


def _classifier_weight_grad(model: Model, grad: Params) -> jax.Array:
    try:
        return grad[model.classifier]["w"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"label counts: the update has no dense classifier "
                         f"{model.classifier!r} with weights 'w'.") from e


def output_stats(model: Model, params: Params, dummies: jax.Array,
                 noise: Any = None) -> tuple[jax.Array, jax.Array]:
    """``(mean softmax per class (C,), mean summed penultimate activation)`` on ``dummies``.

    The penultimate features are read without a model hook: for the classifier
    ``logits = f @ w + b``, the gradient of ``sum_i logits_i0`` with respect to ``w`` has
    ``sum_i f_i`` as its column 0.
    """
    noise = {} if noise is None else noise
    logits = model.apply(params, dummies, noise)
    p = jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0)

    def first_logit_sum(w):
        p2 = {**params, model.classifier: {**params[model.classifier], "w": w}}
        return jnp.sum(model.apply(p2, dummies, noise)[:, 0])

    feats = jax.grad(first_logit_sum)(params[model.classifier]["w"])[:, 0]
    return p, jnp.sum(feats) / dummies.shape[0]


def _dummy_stats(model, params, key, input_shape, config):
    k_x, k_n = jax.random.split(key)
    dummies = config.dummy_std * jax.random.normal(
        k_x, (config.num_dummies, *input_shape), jnp.float32)
    noise = model.sample_noise(k_n, tuple(input_shape), config.num_dummies)
    return output_stats(model, params, dummies, noise)


def _llg(g: jax.Array, n: int) -> jax.Array:
    c = g.shape[0]
    neg = g < 0
    impact = jnp.sum(jnp.where(neg, g, 0.0)) / n * (1.0 + 1.0 / c)
    rank = jnp.argsort(jnp.argsort(g))
    first = neg & (rank < n)
    counts = first.astype(jnp.int32)
    g = g - impact * first
    left = n - jnp.sum(counts)

    def body(i, carry):
        counts, g = carry
        j = jnp.argmin(g)
        on = i < left
        return counts.at[j].add(on.astype(jnp.int32)), g.at[j].add(-impact * on)

    counts, _ = jax.lax.fori_loop(0, n, body, (counts, g))
    return counts


def _yin(w_grad: jax.Array, n: int) -> jax.Array:
    c = w_grad.shape[-1]
    rank = jnp.argsort(jnp.argsort(jnp.min(w_grad, axis=0)))
    return (n // c + (rank < n % c)).astype(jnp.int32)


def raw_counts(method: str, observation: Observation, model: Model, *,
               key: jax.Array | None = None, input_shape: tuple[int, ...] | None = None,
               num_samples: int | None = None,
               config: LabelCountConfig = LabelCountConfig()) -> jax.Array:
    """The real-valued count estimates of ``"geng"``, ``"dimitrov"`` or
    ``"dimitrov_scalar"`` before rounding (C,); see :func:`infer_counts`."""
    if method not in DUMMY_METHODS:
        raise ValueError(f"raw_counts: {method!r} gives integer counts directly; methods "
                         f"with real estimates: {', '.join(DUMMY_METHODS)}.")
    if key is None or input_shape is None:
        raise ValueError(f"label-count method {method!r} feeds dummy inputs through the "
                         "model: pass key= and input_shape=(H, W, C).")
    n = observation.num_samples if num_samples is None else num_samples
    steps = observation.local.num_steps(observation.num_samples)
    w_grad = _classifier_weight_grad(model, gradient_sum(observation))
    dw = jnp.sum(w_grad, axis=0)
    params = observation.params
    p0, o0 = _dummy_stats(model, params, key, input_shape, config)
    if method == "geng" or steps == 1:
        p, o = p0[None], o0[None]
    else:
        end = jax.tree.map(jnp.subtract, params, _weight_delta(observation))
        p1, o1 = _dummy_stats(model, end, key, input_shape, config)
        coef = jnp.arange(steps, dtype=jnp.float32) / steps
        p = (1 - coef)[:, None] * p0[None] + coef[:, None] * p1[None]
        o = (1 - coef) * o0 + coef * o1
    if method == "dimitrov_scalar":
        p = jnp.mean(p, axis=-1, keepdims=True) * jnp.ones_like(p)
    per_point = n * p - n * dw[None] / (o[:, None] * steps)
    return jnp.mean(per_point, axis=0)


def _weight_delta(observation: Observation) -> Params:
    if observation.kind == "gradient":
        lr = observation.local.learning_rate(observation.round)
        return jax.tree.map(lambda u: lr * u, observation.update)
    return observation.update


def infer_counts(method: str, observation: Observation, model: Model, *,
                 key: jax.Array | None = None, input_shape: tuple[int, ...] | None = None,
                 num_samples: int | None = None,
                 config: LabelCountConfig = LabelCountConfig()) -> jax.Array:
    """Counts per class (C,) of the client's training labels, by ``method``.

    Args:
      method: one of :data:`METHODS` (see the module docstring).
      observation: one client's :class:`~jgi.fl.Observation` (no leading victim axis;
        :func:`infer_counts_victims` maps over victims).
      model: the attacked model (its ``classifier`` names the last dense layer).
      key: PRNG key of the dummy inputs (methods in :data:`DUMMY_METHODS`).
      input_shape: (H, W, C) of one input (methods in :data:`DUMMY_METHODS`).
      num_samples: how many labels to infer; default ``observation.num_samples``.
      config: :class:`LabelCountConfig`.

    Returns:
      int32 counts (C,) summing to ``num_samples``. Jittable (``method``, shapes and the
      observation's static fields are static).
    """
    if method not in METHODS:
        raise ValueError(f"Unknown label-count method {method!r}; valid: "
                         f"{', '.join(METHODS)}.")
    n = observation.num_samples if num_samples is None else num_samples
    if n < 1:
        raise ValueError(f"infer_counts needs num_samples >= 1, got {n}.")
    grad = gradient_sum(observation)
    c = _num_classes(model, observation.params)
    if method == "idlg":
        return n * jax.nn.one_hot(idlg_labels(grad, model.classifier), c, dtype=jnp.int32)
    w_grad = _classifier_weight_grad(model, grad)
    if method == "yin":
        return _yin(w_grad, n)
    if method == "llg":
        return _llg(jnp.sum(w_grad, axis=0), n)
    return round_counts(raw_counts(method, observation, model, key=key,
                                   input_shape=input_shape, num_samples=n, config=config), n)


def infer_counts_victims(method: str, observation: Observation, model: Model, *,
                         key: jax.Array | None = None,
                         input_shape: tuple[int, ...] | None = None,
                         num_samples: int | None = None,
                         config: LabelCountConfig = LabelCountConfig()) -> jax.Array:
    """:func:`infer_counts` for many victims at once: ``observation.update`` with a
    leading victim axis (``params`` shared), one key per victim split from ``key``.
    Returns counts (V, C)."""
    v = jax.tree.leaves(observation.update)[0].shape[0]
    keys = jax.random.split(jax.random.key(0) if key is None else key, v)

    def one(update, k):
        return infer_counts(method, observation.replace(update=update), model,
                            key=k if key is not None else None, input_shape=input_shape,
                            num_samples=num_samples, config=config)

    return jax.jit(jax.vmap(one))(observation.update, keys)


__all__ = ["DUMMY_METHODS", "LabelCountConfig", "METHODS", "count_error", "counts_of",
           "gradient_sum", "infer_counts", "infer_counts_victims", "label_accuracy",
           "labels_from_counts", "output_stats", "raw_counts", "round_counts"]
