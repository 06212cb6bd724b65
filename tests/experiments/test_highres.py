import numpy as np

from experiments import highres
from jgi import results
from jgi.attacks import highres as attack
from jgi.attacks import runner


def _fake_reconstruct(model, params, grad, labels, key, config, *, input_shape,
                      progress=False):
    """The attack's result shape without its compilation (~6 s; tests/attacks runs it)."""
    del labels, key, progress
    images = np.full((1, 1, *input_shape), 0.5, np.float32)
    result = runner.AttackResult(best={"x": images}, best_loss=np.zeros(1),
                                 iterations=np.array([config.max_iters]),
                                 stop_reason=np.zeros(1, np.int32), wall_seconds=0.0,
                                 compile_seconds=0.0)
    features = np.asarray(attack.analytic_features(model, grad))[None]
    return attack.HighResResult(images=images, raw=images, features=features, attack=result)


def test_cli_writes_rows_tables_and_resumes(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(attack, "reconstruct", _fake_reconstruct)
    from PIL import Image
    folder = tmp_path / "xrays"
    folder.mkdir()
    Image.fromarray((np.arange(144).reshape(12, 12) * 1.7).astype(np.uint8)).save(
        folder / "a.png")
    out = tmp_path / "out"
    # Smallest run: the paper's loss, one 12x12 image upsampled to 16x16, one L-BFGS step,
    # one row (noise variance 1e-2; each row compiles its own attack, ~30 s a row on the
    # loaded 2-core machine), the attack itself faked; its quality is tests/attacks' job.
    argv = ["--resolutions=16", "--methods=paper", f"--images=folder:{folder}", "--steps=1",
            "--noise-variances=1e-2", f"--out={out}"]
    assert highres.main(argv) == 0
    rows = results.read_rows(out / "results.jsonl")
    assert len(rows) == 1 and all(r["iterations"] == 1 and r["upsampled"] for r in rows)
    assert rows[0]["variables"] == 16 * 16 * 3 and rows[0]["weights"] == [1.0, 1.5e-8, 1e-10]
    assert (rows[0]["conv_impl"], rows[0]["gradient_mode"]) == ("patches", "jvp")  # defaults
    # Noise of variance 1e-2 on dW/db breaks the analytic step (exact without noise:
    # tests/attacks/test_highres.py); measured logit error 0.26.
    assert rows[0]["analytic_logit_error"] > 1e-2
    assert (out / "fig5.png").exists() and (out / rows[0]["grid"]).exists()
    table = (out / "table.md").read_text()
    assert "| 16 | folder:" in table and "| 0.01 |" in table
    capsys.readouterr()
    assert highres.main(argv) == 0  # second run: every row already there
    assert capsys.readouterr().out.count("skipped") == 1
    assert len(results.read_rows(out / "results.jsonl")) == 1


def test_cli_refuses_bad_settings(tmp_path, capsys):
    assert highres.main(["--methods=gan", f"--out={tmp_path}"]) == 2
    assert "methods must be among paper, dlg-baseline" in capsys.readouterr().out
    assert highres.main([f"--images=folder:{tmp_path / 'none'}", "--resolutions=16",
                         f"--out={tmp_path}"]) == 2
    assert "does not exist" in capsys.readouterr().out
    assert highres.main(["--conv-impl=fft", f"--out={tmp_path}"]) == 2
    assert "conv_impl must be one of patches, lax, got 'fft'" in capsys.readouterr().out
