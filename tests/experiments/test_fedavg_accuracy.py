import json

import pytest

from experiments import fedavg_accuracy


def test_cli_writes_one_row_and_the_table_with_the_papers_figure_then_skips_it(tmp_path,
                                                                               capsys):
    # Two IID clients of 20 images (16 train, 4 held out): one client size, one compile.
    args = ["--data-source=embedded", "--models=mlp", "--rounds=1", "--clients=2", "--iid",
            "--train-examples=40", "--no-augment", "--no-progress", f"--out={tmp_path}"]
    assert fedavg_accuracy.main(args) == 0
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert row["model"] == "mlp" and row["split"] == "iid" and row["client_sizes"] == [16, 16]
    assert row["heldout_examples"] == 8 and row["test_examples"] == 300  # the embedded sample
    assert row["local"]["lr"] == 0.1 and row["local"]["momentum"] == 0.5
    assert 0.0 <= row["test_accuracy"] <= 1.0 and row["curve"]["round"] == [1]
    table = (tmp_path / "table.md").read_text()
    assert "| mlp | cifar10 | cpu | 2 (iid) | 1 | 32 / 8 / 300 |" in table and "| 51% |" in table
    assert fedavg_accuracy.main(args) == 0
    assert "skipped" in capsys.readouterr().out
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == 1


def test_presets_and_bad_arguments_say_what_would_be_right(capsys):
    paper = fedavg_accuracy.PRESETS["paper"]
    assert (paper.rounds, paper.clients, paper.beta, paper.augment) == (100, 10, 0.5, True)
    assert paper.train_examples is None
    with pytest.raises(ValueError, match="at least 10 per client"):
        fedavg_accuracy.Preset(rounds=1, train_examples=50, clients=10)
    assert fedavg_accuracy.main(["--models=alexnet"]) == 2
    assert "valid: " in capsys.readouterr().out
