"""The analytic-attacks experiment prints its table and writes its grids."""

import pytest

from experiments import analytic


@pytest.mark.slow
def test_quick_run_writes_table_and_grids(tmp_path, capsys):
    assert analytic.main([
        "--parts=analytic,rtf", "--victims=4", "--rtf-bins=8", "--rtf-batches=4",
        "--rtf-clients=2", "--rtf-gains=1", "--rtf-lrs=0.001", "--rtf-laplace=0",
        "--data-source=embedded",
        f"--workdir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| analytic FC")
            or line.startswith("| RTF")]
    assert len(rows) == 2 + 1 + 1 + 1, out
    batch1 = rows[0].split("|")
    assert batch1[2].strip() == "MLP, batch 1" and float(batch1[7]) == 1.0  # all exact
    assert (tmp_path / "analytic.md").read_text().strip() == out.strip()
    for name in ("analytic_batch1", "analytic_batch4", "rtf_b4_k8", "rtf_fedavg_gain1_lr0.001",
                 "rtf_aggregate"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_unknown_part_is_refused(capsys):
    with pytest.raises(SystemExit):
        analytic.main(["--parts=gradinversion"])
    assert "valid: analytic, rtf, training, cpa, rgap" in capsys.readouterr().err


@pytest.mark.slow
def test_fedavg_part_resumes_from_its_keyed_rows(tmp_path, capsys):
    argv = ["--parts=fedavg", "--fedavg-dataset=mnist", "--fedavg-backbones=mlp",
            "--fedavg-gains=1", "--fedavg-clients=2", "--fedavg-images=32",
            "--fedavg-rounds=2", "--fedavg-test=64", "--data-source=embedded",
            f"--workdir={tmp_path}"]
    assert analytic.main(argv) == 0
    first = capsys.readouterr().out
    rows = [line for line in first.splitlines() if line.startswith(("| mlp", "| imprint+mlp"))]
    assert [r.split("|")[1].strip() for r in rows] == ["mlp", "imprint+mlp gain 1"], first
    assert all(len(r.split("|")[2].split(" / ")) == 2 for r in rows)  # one value per round
    stored = (tmp_path / "fedavg_rows.jsonl").read_text()
    assert analytic.main(argv) == 0  # a rerun trains nothing and prints the same rows
    assert (tmp_path / "fedavg_rows.jsonl").read_text() == stored
    assert [line for line in capsys.readouterr().out.splitlines()
            if line.startswith(("| mlp", "| imprint+mlp"))] == rows
