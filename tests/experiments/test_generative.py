"""experiments.train_generator resumes; experiments.generative writes resumable rows."""

import json

import pytest

from experiments import train_generator
from jgi.models import generator as gen

TINY = ["--data-source=embedded", "--width=2", "--latent-dim=4", "--batch=4",
        "--n-critic=1", "--chunk=1", "--train-limit=32", "--quality-samples=0",
        "--checkpoint-seconds=0", "--sample-every=2", "--no-progress"]


@pytest.mark.slow
def test_train_generator_writes_weights_samples_and_resumes(tmp_path):
    work = tmp_path / "g"
    assert train_generator.main([f"--workdir={work}", "--steps=2", *TINY]) == 0
    first = json.loads((work / "summary.json").read_text())
    assert first["steps"] == 2 and first["resumed_from"] == 0
    assert (work / "samples" / "step_000002.png").is_file()
    # A rerun with more steps continues from the checkpoint, not from step 0.
    assert train_generator.main([f"--workdir={work}", "--steps=3", *TINY]) == 0
    second = json.loads((work / "summary.json").read_text())
    assert second["resumed_from"] == 2 and second["steps"] == 3
    log = (work / "log.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in log]
    assert steps == [1, 2, 3]
    spec, _ = gen.load_generator(work / "generator.msgpack",
                                 sha256=(work / "generator.sha256").read_text().strip())
    assert spec.latent_dim == 4 and spec.image_shape == (28, 28, 1)


@pytest.mark.slow
def test_generative_rows_are_resumable(tmp_path, capsys):
    pytest.importorskip("evosax", reason="GGL needs evosax (pip install evosax==0.3.2)")
    from experiments import generative
    import jax
    spec = gen.GeneratorSpec((28, 28, 1), latent_dim=4, width=2)
    path = tmp_path / "g.msgpack"
    gen.save_generator(path, spec, gen.generator(spec)[0](jax.random.key(0)))
    argv = ["--data-source=embedded", "--attack=ggl,ig", "--victims=1", "--grid=1x1x1",
            "--population=4", "--generations=1", "--ig-iters=2", f"--generator={path}",
            f"--workdir={tmp_path / 'w'}", "--curve"]
    assert generative.main(argv) == 0
    rows = [json.loads(line) for line in (tmp_path / "w" / "results.jsonl").open()]
    assert [r["attack"] for r in rows] == ["ggl", "ig"]
    assert all(-1 <= r["ssim"] <= 1 and r["label_acc"] == 1.0 for r in rows)
    # Keyed by every setting (jgi.results.KeyedRows): distinct ids, the GGL distance in
    # GGL's identity.
    assert len({r["row_id"] for r in rows}) == 2 and rows[0]["ggl_distance"] == "layer_l2"
    # --curve: GGL's best-match SSIM after each chunk (here one generation of 4), the
    # last point the row's own result.
    assert [c["evaluations"] for c in rows[0]["curve"]] == [4]
    assert abs(rows[0]["curve"][-1]["ssim"] - rows[0]["ssim"]) < 1e-6
    assert (tmp_path / "w" / "curves" / "ggl_1x1x1.png").is_file()
    assert "| 1x1x1 (1) |" in capsys.readouterr().out
    assert generative.main(argv) == 0  # every row is there: nothing is recomputed
    assert len((tmp_path / "w" / "results.jsonl").read_text().split("\n")) == 3
