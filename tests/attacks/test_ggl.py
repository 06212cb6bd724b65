"""GGL: the vmapped CMA-ES latent search lowers the gradient distance; labels; defenses."""

import jax
import jax.numpy as jnp
import pytest

pytest.importorskip("evosax", reason="GGL needs evosax (pip install evosax==0.3.2)")

from jgi import defenses, fl, models  # noqa: E402
from jgi.attacks import ggl  # noqa: E402
from jgi.models import generator as gen  # noqa: E402

SPEC = gen.GeneratorSpec((28, 28, 1), latent_dim=8, width=4)


MODEL = models.get("mlp", width=16)
PRUNE = defenses.DefenseStack(prune=0.9)


@jax.jit
def _setup():
    g_params = gen.generator(SPEC)[0](jax.random.key(0))
    params = MODEL.init(jax.random.key(1), SPEC.image_shape)
    # Victims whose images lie on the generator's range: x = G(z*).
    z_true = jax.random.normal(jax.random.key(2), (2, SPEC.latent_dim))
    x = gen.generator(SPEC)[1](g_params, z_true)
    y = jnp.array([3, 7])
    updates = fl.victim_updates(MODEL, params, x, y)
    pruned = fl.victim_updates(MODEL, params, x, y, stack=PRUNE)
    return params, g_params, updates, pruned, y, z_true


def test_search_beats_random_latents_guesses_labels_and_reapplies_defense():
    params, g_params, updates, pruned, y, z_true = _setup()
    model, generator = MODEL, (SPEC, g_params)
    config = ggl.GGLConfig(population=8, generations=12, chunk=6)
    seen = []
    result = ggl.reconstruct(model, params, updates, jax.random.key(3), config,
                             generator=generator,
                             on_chunk=lambda n, z, f: seen.append((n, z, f)))
    # The trajectory: one call per chunk of 6 generations x 8 candidates, the best loss
    # never rising, the last call's latents and losses the result's.
    assert [n for n, _, _ in seen] == [48, 96]
    assert bool(jnp.all(seen[1][2] <= seen[0][2]))
    assert jnp.array_equal(seen[-1][1], result.latents[:, 0])
    assert jnp.array_equal(seen[-1][2], result.loss)
    assert result.images.shape == (2, 1, 28, 28, 1)
    assert result.latents.shape == (2, 1, SPEC.latent_dim)
    assert result.labels[:, 0].tolist() == [3, 7]  # iDLG's guess is exact at batch 1
    random_z = jax.random.normal(jax.random.key(4), (64, 2, SPEC.latent_dim))
    random_loss = ggl.evaluation_loss(model, params, updates, random_z,
                                      generator=generator, labels=y)  # (64, V)
    # The returned loss is the objective at the returned latent.
    again = ggl.evaluation_loss(model, params, updates, result.latents[:, 0],
                                generator=generator, labels=y)
    assert jnp.allclose(again, result.loss, rtol=1e-4, atol=1e-6)
    # 96 CMA-ES evaluations beat the best of 64 random latents for each victim.
    # Measured: best 0.096 / 0.151 against random min 0.40 / 0.30 and median 0.85 / 1.15
    # (ratio to the median ~0.12; asserted < 0.5).
    assert bool(jnp.all(result.loss < jnp.min(random_loss, 0)))
    assert bool(jnp.all(result.loss < 0.5 * jnp.median(random_loss, 0)))

    stack, defended = PRUNE, pruned
    plain = ggl.evaluation_loss(model, params, defended, z_true, generator=generator,
                                labels=y, config=ggl.GGLConfig())
    adaptive = ggl.evaluation_loss(model, params, defended, z_true, generator=generator,
                                   labels=y, config=ggl.GGLConfig(reapply_defense=True),
                                   stack=stack)
    # With the defense reapplied the true latent matches the pruned update exactly
    # (only the KL term is left); without it, the pruned-away entries count.
    kl = jax.vmap(ggl.latent_kl)(z_true) * 0.1
    assert jnp.allclose(adaptive, kl, atol=1e-6)
    assert bool(jnp.all(plain > adaptive + 1e-6))


def test_config_validation():
    with pytest.raises(ValueError, match="population"):
        ggl.GGLConfig(population=2)
    with pytest.raises(ValueError, match="distance"):
        ggl.GGLConfig(distance="l1")
    assert ggl.GGLConfig().evaluations == 25_000
