import jax
import jax.numpy as jnp

from experiments import attack_trained
from jgi import data, defenses, models
from jgi.fl import client


def test_training_steps_lower_the_loss_under_the_stack():
    ds = data.load("mnist", source="embedded")
    x = jnp.asarray(data.normalize(ds.x_train[:256], ds.info))
    y = jnp.asarray(ds.y_train[:256])
    stack = defenses.from_names("dp,cvb")
    model = models.get("cnn", **stack.model_options())
    p0 = model.init(jax.random.key(0), ds.info.image_shape)
    p1 = attack_trained.train(model, p0, stack, x, y, 30, jax.random.key(1),
                              ds.info.image_shape)
    noise = model.sample_noise(jax.random.key(2), ds.info.image_shape, 256)
    before = float(client.client_loss(model, p0, x, y, noise))
    after = float(client.client_loss(model, p1, x, y, noise))
    assert after < 0.8 * before, (before, after)


def test_cli_prints_one_row_per_steps_and_stack(capsys):
    rc = attack_trained.main(["--data-source=embedded", "--steps=0", "--defenses=dp",
                              "--victims=1", "--max-iters=5", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    rows = [line for line in out.splitlines() if line.startswith("| 0 |")]
    assert len(rows) == 1 and "| dp |" in rows[0]


def test_cli_rejects_bad_steps(capsys):
    assert attack_trained.main(["--data-source=embedded", "--steps=3,-1"]) == 2
    assert "non-negative integers" in capsys.readouterr().out
