import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgi.defenses import input_encoding as enc


def _pool(n=10, shape=(4, 4, 1)):
    x = jax.random.normal(jax.random.key(0), (n, *shape))
    y = jax.nn.one_hot(jnp.arange(n) % 10, 10)
    return x, y


@pytest.mark.parametrize("config", [enc.MIXUP, enc.INSTAHIDE])
def test_encoding_is_the_documented_mix(config):
    pool_x, pool_y = _pool()
    x, y = pool_x[:3] * 0 + 1.0, jax.nn.one_hot(jnp.array([1, 2, 3]), 10)
    mixing = enc.sample_mixing(jax.random.key(1), config, 3, len(pool_x), (4, 4, 1))
    assert mixing.weights.shape == (3, config.k) and mixing.partners.shape == (3, config.k - 1)
    np.testing.assert_allclose(mixing.weights.sum(1), 1.0, rtol=1e-6)
    assert np.all(np.asarray(mixing.weights) >= 0)
    out_x, out_y = enc.encode(x, y, pool_x, pool_y, mixing)
    for b in range(3):
        w, p = np.asarray(mixing.weights[b]), np.asarray(mixing.partners[b])
        mix = w[0] * np.asarray(x[b]) + sum(w[j + 1] * np.asarray(pool_x[p[j]])
                                            for j in range(config.k - 1))
        lab = w[0] * np.asarray(y[b]) + sum(w[j + 1] * np.asarray(pool_y[p[j]])
                                            for j in range(config.k - 1))
        if config.sign_flip:
            signs = np.asarray(mixing.signs[b])
            assert set(np.unique(signs)) <= {-1.0, 1.0}
            mix = mix * signs
        np.testing.assert_allclose(out_x[b], mix, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out_y[b], lab, rtol=1e-5, atol=1e-6)
        assert float(out_y[b].sum()) == pytest.approx(1.0, abs=1e-5)
    assert (mixing.signs is not None) == config.sign_flip


def test_weight_bound_and_same_key_same_mixing():
    cfg = enc.EncodingConfig("instahide", k=4, first_alpha=3.0, max_weight=0.65)
    a = enc.sample_mixing(jax.random.key(5), cfg, 64, 100, (2, 2, 1))
    b = enc.sample_mixing(jax.random.key(5), cfg, 64, 100, (2, 2, 1))
    np.testing.assert_array_equal(a.weights, b.weights)
    assert float(jnp.max(a.weights)) <= 0.65 + 1e-6
    with pytest.raises(ValueError, match="mixup, instahide"):
        enc.EncodingConfig("cutmix")
