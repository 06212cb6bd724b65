import jax
import numpy as np
import pytest

from jgi import defenses, diagnostics, models


def _images(n=2, shape=(28, 28, 1)):
    return (jax.random.normal(jax.random.key(1), (n, *shape)),
            jax.random.randint(jax.random.key(2), (n,), 0, 10))


def test_a_deterministic_update_has_cosine_one_everywhere():
    model = models.get("cnn")
    params = model.init(jax.random.key(0), (8, 8, 1))
    x, y = _images(shape=(8, 8, 1))
    report = diagnostics.update_noise(model, params, x, y, jax.random.key(3), draws=2)
    np.testing.assert_allclose(report.cosine, 1.0, atol=1e-5)
    assert report.cosine_all == pytest.approx(1.0, abs=1e-5)
    assert report.share.sum() == pytest.approx(1.0, abs=1e-5)
    assert report.cosine_pig is None and report.pig_kept.all()


def test_dp_noise_is_counted_as_randomness():
    model = models.get("cnn")
    params = model.init(jax.random.key(0), (8, 8, 1))
    x, y = _images(shape=(8, 8, 1))
    loud = defenses.from_names(["dp"], dp=defenses.DPConfig(clip_norm=1.0,
                                                             noise_multiplier=10.0))
    report = diagnostics.update_noise(model, params, x, y, jax.random.key(3), loud, draws=2)
    assert abs(report.cosine_all) < 0.2  # noise std 10 per entry swamps a norm-1 update


def test_precode_before_the_classifier_leaves_pigs_layers_nearly_deterministic():
    # the explanation of the PRECODE rows of Table 3 (README): measured on these random
    # images, PIG-kept cosine ~0.8 and whole-update cosine ~0.05 before the classifier;
    # after conv block 0 the kept leaves' cosine is ~0.3.
    x, y = _images()
    late = models.get("cnn", bottleneck="precode", precode_position="classifier")
    early = models.get("cnn", bottleneck="precode", precode_block=0)
    r_late = diagnostics.update_noise(late, late.init(jax.random.key(0), (28, 28, 1)), x, y,
                                      jax.random.key(3), draws=3)
    r_early = diagnostics.update_noise(early, early.init(jax.random.key(0), (28, 28, 1)), x,
                                       y, jax.random.key(3), draws=3)
    assert r_late.cosine_pig > 0.6 and r_late.cosine_all < 0.3
    assert r_early.cosine_pig < r_late.cosine_pig - 0.3
    assert "['bottleneck']['decoder']['w']" in r_late.markdown()


def test_bad_arguments_say_what_is_wrong():
    model = models.get("cnn")
    params = model.init(jax.random.key(0), (8, 8, 1))
    x, y = _images(shape=(8, 8, 1))
    with pytest.raises(ValueError, match="draws must be >= 2"):
        diagnostics.update_noise(model, params, x, y, jax.random.key(0), draws=1)
    with pytest.raises(ValueError, match=r"expected x \(V, H, W, C\)"):
        diagnostics.update_noise(model, params, x[0], y, jax.random.key(0))
