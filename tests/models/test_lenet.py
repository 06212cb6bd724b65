import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgi import models
from jgi.models.lenet import HEALTH_OPTIONS


def _count(params):
    return sum(int(np.size(leaf)) for leaf in jax.tree.leaves(params))


def _shapes(model, input_shape):
    return jax.eval_shape(lambda key: model.init(key, input_shape), jax.random.key(0))


def test_dlg_lenet_parameter_counts_and_uniform_init():
    model = models.get("lenet")
    shapes = _shapes(model, (32, 32, 3))
    # 3x(5x5 conv, 12 ch) + FC 768 -> 10: 912 + 3,612 + 3,612 + 7,690.
    assert _count(shapes) == 15_826
    assert shapes["dense"]["w"].shape == (768, 10)
    # DLG's CIFAR-100 head: 768 -> 100.
    assert _count(_shapes(models.get("lenet", num_classes=100), (32, 32, 3))) == 85_036
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(0), (32, 32, 3))
    leaves = np.concatenate([np.ravel(a) for a in jax.tree.leaves(params)])
    assert leaves.min() >= -0.5 and leaves.max() <= 0.5 and leaves.std() > 0.28  # U: 0.289


def test_health_lenet_is_one_configuration_at_any_resolution():
    model = models.get("lenet", **HEALTH_OPTIONS)
    for size, features in ((64, 16 * 16 * 12), (40, 10 * 10 * 12)):
        params = _shapes(model, (size, size, 3))
        assert params["dense"]["w"].shape == (features, 2)
        # 912 + 3 x 3,612 conv parameters, then FC features -> 2.
        assert _count(params) == 912 + 3 * 3_612 + features * 2 + 2
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(0), (16, 16, 3))
    assert float(jnp.max(jnp.abs(params["conv0"]["b"]))) == 0.0  # He: zero biases
    w = np.asarray(params["conv1"]["w"])
    assert w.std() == pytest.approx(np.sqrt(2 / (25 * 12)), rel=0.05)


def test_options_are_validated():
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        models.get("lenet", activation="tanh")
    with pytest.raises(ValueError, match="one entry per convolution"):
        models.get("lenet", channels=(12, 12), strides=(2, 2, 1))
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        models.get("lenet", kernel_size=4)


def test_same_function_as_dlgs_pytorch_lenet():
    torch = pytest.importorskip("torch")
    model = models.get("lenet", activation="relu")
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(1), (16, 16, 3))
    x = np.random.default_rng(2).uniform(size=(2, 16, 16, 3)).astype(np.float32)
    convs = []
    cin = 3
    for i, s in enumerate((2, 2, 1)):
        conv = torch.nn.Conv2d(cin, 12, 5, stride=s, padding=2)
        w = np.asarray(params[f"conv{i}"]["w"]).transpose(3, 2, 0, 1)
        conv.weight.data = torch.from_numpy(w.copy())
        conv.bias.data = torch.from_numpy(np.asarray(params[f"conv{i}"]["b"]))
        convs += [conv, torch.nn.ReLU()]
        cin = 12
    h = torch.nn.Sequential(*convs)(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    # PyTorch flattens (C, H, W); jgi (H, W, C).
    feats = h.permute(0, 2, 3, 1).flatten(1).detach().numpy()
    ref = feats @ np.asarray(params["dense"]["w"]) + np.asarray(params["dense"]["b"])
    ours = jax.jit(lambda p, x: model.apply(p, x, {}))(params, jnp.asarray(x))
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
