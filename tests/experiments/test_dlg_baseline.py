import json

from experiments import dlg_baseline


def test_cli_writes_rows_table_and_grid(tmp_path, capsys):
    # Smallest run: iDLG, one image of the embedded CIFAR-10 sample at 8x8, a one-conv
    # LeNet, 2 PyTorch-style steps (the reconstruction quality is tests/attacks' job).
    rc = dlg_baseline.main(["--data-source=embedded", "--attacks=idlg", "--lbfgs=pytorch",
                            "--images=1", "--steps=2", "--image-size=8", "--channels=4",
                            "--strides=2", "--kernel-size=3", f"--out={tmp_path}",
                            "--no-progress"])
    assert rc == 0
    assert "| idlg | pytorch | 2 | 1 |" in capsys.readouterr().out
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert len(rows) == 1 and rows[0]["iterations"] == 2
    assert rows[0]["predicted_label"] == rows[0]["label"]  # iDLG's label is exact at batch 1
    assert 0 <= rows[0]["ssim"] <= 1 and rows[0]["mse"] >= 0
    assert (tmp_path / "grid_idlg_pytorch.png").stat().st_size > 1000
    assert (tmp_path / "table.md").exists()


def test_cli_refuses_unknown_semantics(capsys):
    assert dlg_baseline.main(["--lbfgs=scipy", "--data-source=embedded"]) == 2
    assert "L-BFGS semantics must be among pytorch, optax" in capsys.readouterr().out
