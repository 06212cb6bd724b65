"""The runner shards the victim axis over every device and gives the one-device result.

``--xla_force_host_platform_device_count`` must be set before jax is imported, so the
multi-device runs happen in a subprocess with 4 virtual CPU devices.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import json
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jgi import fl, models
    from jgi.attacks import ig, runner

    assert len(jax.devices()) == 4, jax.devices()
    out = {}

    # 1. A toy problem with a known answer; 6 victims (padded to 8 on 4 devices) that
    #    stop at very different iterations, so the compaction runs too.
    def init(key, victim, context):
        return {"x": jnp.zeros_like(victim["target"])}

    def objective(candidate, victim, context, key):
        return jnp.sum((candidate["x"] - victim["target"]) ** 2), {}

    toy = runner.Problem(init, objective, optax.sgd(0.02), lambda c, v, ctx: c)
    targets = jnp.stack([jnp.full((3,), 10.0 ** (i / 2 - 2)) for i in range(6)])
    stopping = runner.StoppingRule(max_iters=300, loss_below=1e-6, patience=1000)
    for name, devices in (("one", jax.devices()[:1]), ("four", None)):
        r = runner.run(toy, {"target": targets}, {}, jax.random.key(0), stopping,
                       chunk_size=10, progress=False, devices=devices)
        out["toy_" + name] = {"x": r.best["x"].tolist(), "it": r.iterations.tolist(),
                              "reason": r.stop_reason.tolist(), "devices": r.num_devices}

    # 2. Inverting Gradients on 3 victims (padded to 4), a few steps.
    shape = (12, 12, 1)
    model = models.get("cnn", channels=(4, 8))
    params = model.init(jax.random.key(0), shape)
    x = jax.random.uniform(jax.random.key(1), (3, *shape))
    y = jnp.arange(3)
    updates = fl.victim_updates(model, params, x, y, {})
    cfg = ig.IGConfig(max_iters=12, chunk_size=4)
    problem = ig.problem(model, shape, cfg)
    victims = {"target": updates, "label": y}
    context = {"params": params, "bounds": None}
    for name, devices in (("one", jax.devices()[:1]), ("four", None)):
        r = runner.run(problem, victims, context, jax.random.key(2), cfg.stopping(),
                       chunk_size=cfg.chunk_size, progress=False, devices=devices)
        out["ig_" + name] = {"x": r.best["x"].tolist(), "loss": r.best_loss.tolist(),
                             "it": r.iterations.tolist(), "devices": r.num_devices}
    print("RESULT" + json.dumps(out))
""")


def _run_with_four_devices():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def test_sharded_victims_give_the_single_device_results():
    out = _run_with_four_devices()
    one, four = out["toy_one"], out["toy_four"]
    assert (one["devices"], four["devices"]) == (1, 4)
    assert len(set(one["it"])) > 3  # stopping times differ: compaction happened
    assert one["it"] == four["it"] and one["reason"] == four["reason"]
    np.testing.assert_array_equal(four["x"], one["x"])
    assert len(four["x"]) == 6  # the padding victims are dropped

    one, four = out["ig_one"], out["ig_four"]
    assert (one["devices"], four["devices"]) == (1, 4)
    assert np.shape(four["x"]) == (3, 12, 12, 1)
    assert one["it"] == four["it"] == [12, 12, 12]
    np.testing.assert_allclose(four["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(four["x"], one["x"], rtol=1e-5, atol=1e-5)
