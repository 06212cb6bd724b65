import json

import numpy as np

import pytest

from experiments import ablation
from jgi import pipeline, results

REQUIRED = ("model", "dataset", "defenses", "attack", "n_victims", "ssim_mean", "ssim_std",
            "psnr_mean", "mse_mean", "asr", "per_victim_ssim", "iterations", "wall_seconds",
            "device", "config")


def _run(out, *extra, utility=False):
    return ablation.main(["--preset=smoke", "--data-source=embedded", "--victims=2",
                          "--max-iters=40", "--chunk-size=20", "--no-progress", f"--out={out}",
                          *([] if utility else ["--no-utility"]), *extra])


def test_smoke_run_writes_results_table_and_picture_and_reuses_finished_rows(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    row = rows[0]
    for field in REQUIRED:
        assert field in row, field
    assert row["defenses"] == [] and row["attack"] == "cdia" and row["n_victims"] == 2
    assert 0.0 <= row["asr"] <= 1.0 and len(row["per_victim_ssim"]) == 2
    assert row["iterations"] == [40, 40]
    assert row["config"]["attack_config"]["max_iters"] == 40
    table = (out / "table.md").read_text()
    assert "| MNIST | cnn | ✗ | ✗ | ✗ | ✗ | ✗ | paper | CDIA | 2 |" in table
    png = (out / "reconstructions.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not (out / "checkpoints" / row["row_id"]).exists()  # cleared after the row

    capsys.readouterr()
    assert _run(out) == 0  # same command: reused, not recomputed
    assert "already in" in capsys.readouterr().out
    assert len((out / "results.jsonl").read_text().splitlines()) == 1

    assert _run(out, "--seed=1") == 0  # a different row is added
    assert len((out / "results.jsonl").read_text().splitlines()) == 2


def test_idlg_labels_are_recovered_and_recorded(tmp_path):
    out = tmp_path / "run"
    assert _run(out, "--labels=idlg") == 0
    row = json.loads((out / "results.jsonl").read_text())
    assert row["label_accuracy"] == 1.0 and row["config"]["labels"] == "idlg"


def test_bad_flags_are_refused_with_the_valid_choices(tmp_path, capsys):
    with pytest.raises(SystemExit):
        ablation.main(["--model=alexnet", f"--out={tmp_path}"])
    assert "invalid choice: 'alexnet'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ablation.main(["--victims=0", f"--out={tmp_path}"])
    assert "--victims must be >= 1" in capsys.readouterr().err


def test_an_unused_defense_setting_out_of_range_is_still_refused(tmp_path, capsys):
    assert ablation.main(["--prune-rate=1.5", "--defenses=none", f"--out={tmp_path}"]) == 2
    assert "--prune-rate) is a pruning fraction in [0, 1), got 1.5" in capsys.readouterr().out
    assert ablation.main(["--dp-sigma=-1", f"--out={tmp_path}"]) == 2
    assert "noise_multiplier must be >= 0" in capsys.readouterr().out


def test_missing_data_dir_is_a_clear_error(tmp_path, capsys):
    code = ablation.main([f"--data-dir={tmp_path / 'nowhere'}", f"--out={tmp_path}"])
    assert code == 2
    assert "does not exist" in capsys.readouterr().out


@pytest.mark.slow
def test_no_flags_runs_the_demo_on_embedded_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JGI_DATA_DIR", raising=False)
    monkeypatch.setattr(ablation.data.datasets, "load_tfds", _offline)
    assert ablation.main([]) == 0
    printed = capsys.readouterr().out
    assert "quick demo" in printed and "from embedded" in printed
    lines = (tmp_path / "runs" / "cnn_mnist_smoke" / "results.jsonl").read_text().splitlines()
    row, utility = (json.loads(line) for line in lines)
    # The demo really reconstructs: measured SSIM 0.945, ASR 100% on 2 CPU cores.
    assert row["n_victims"] == 8 and row["ssim_mean"] > 0.85 and row["asr"] >= 0.875
    assert utility["kind"] == "utility" and utility["rounds"] == 2


def _offline(info, download=True):
    raise ablation.data.DataError("offline in tests")


def test_defended_row_records_its_stack_and_invalid_stacks_are_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out, "--defenses=dp,cvb", "--dp-sigma=1e-3") == 0
    row = json.loads((out / "results.jsonl").read_text())
    assert row["defenses"] == ["dp", "cvb"]
    assert row["config"]["defenses"]["dp"] == {"clip_norm": 20.0, "noise_multiplier": 1e-3}
    table = (out / "table.md").read_text()
    assert "| MNIST | cnn | ✗ | ✓ | ✗ | C | ✗ | σ=0.001 | CDIA | 2 |" in table
    capsys.readouterr()
    assert _run(out, "--defenses=precode,cvb") == 2
    assert "at most one" in capsys.readouterr().out
    assert _run(out, "--defenses=blur") == 2
    assert "Valid defenses: dropout, dp, prune, precode, cvb" in capsys.readouterr().out
    assert _run(out, "--model=mlp", "--defenses=cvb") == 2
    assert "no place" in capsys.readouterr().out


def test_several_stacks_make_one_table_and_a_figure_per_stack(tmp_path):
    out = tmp_path / "run"
    assert _run(out, "--defenses=none;prune", "--victims=1") == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["defenses"] for r in rows] == [[], ["prune"]]
    assert (out / "reconstructions.png").stat().st_size > 3000
    assert len((out / "table.csv").read_text().splitlines()) == 3


def test_utility_rows_fill_the_accuracy_column(tmp_path):
    out = tmp_path / "run"
    assert _run(out, "--defenses=none;dp", "--rounds=1", utility=True) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    kinds = [(r["kind"], r["defenses"]) for r in rows]
    assert kinds == [("attack", []), ("utility", []), ("attack", ["dp"]), ("utility", ["dp"])]
    utility = [r for r in rows if r["kind"] == "utility"]
    for r in utility:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["rounds"] == 1
        assert len(r["history"]["test_accuracy"]) == 1
    # Real (embedded) MNIST: one round of 10 clients beats chance by far.
    assert utility[0]["accuracy"] > 0.3
    table = (out / "table.md").read_text()
    assert f"{100 * utility[0]['accuracy']:.2f} (1 seed)" in table


def test_a_mixup_utility_row_trains_with_mixup_and_says_so(tmp_path):
    out = tmp_path / "run"
    assert _run(out, "--defenses=none;mixup", "--no-privacy", "--rounds=1", utility=True) == 0
    plain, mixup = (json.loads(line) for line in (out / "results.jsonl").read_text().splitlines())
    assert plain["defenses"] == [] and plain["encoding"] is None
    assert mixup["defenses"] == ["mixup"] and mixup["encoding"] == "mixup"
    assert mixup["config"]["defenses"]["encoding"]["kind"] == "mixup"
    # Trained on mixed images with soft labels: another loss curve than the plain row's.
    assert mixup["history"]["train_loss"] != plain["history"]["train_loss"]
    table = (out / "table.md").read_text()
    assert "| MNIST | cnn | ✗ | ✗ | ✗ | ✗ | MixUp | paper | – |" in table
    assert "| MNIST | cnn | ✗ | ✗ | ✗ | ✗ | ✗ | paper | – |" in table


def test_a_utility_only_run_does_not_claim_a_figure_it_did_not_draw(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out, "--no-privacy", "--rounds=1", utility=True) == 0
    said = capsys.readouterr().out
    assert "table.md" in said and "reconstructions.png" not in said
    assert not (out / "reconstructions.png").exists()


def test_a_resumed_run_produces_exactly_the_rows_of_an_uninterrupted_one(tmp_path, monkeypatch):
    args = ("--defenses=none;prune", "--seeds=1")
    assert _run(tmp_path / "straight", *args) == 0
    real = pipeline.rows.attack_row
    calls = []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(pipeline.rows, "attack_row", interrupted)
    assert _run(tmp_path / "resumed", *args) == 130  # Ctrl-C after the first row
    monkeypatch.setattr(pipeline.rows, "attack_row", real)
    assert len((tmp_path / "resumed" / "results.jsonl").read_text().splitlines()) == 1
    assert _run(tmp_path / "resumed", *args) == 0

    def comparable(path):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        drop = ("wall_seconds", "compile_seconds", "created")
        return [{k: v for k, v in r.items() if k not in drop} for r in rows]

    assert comparable(tmp_path / "resumed" / "results.jsonl") == comparable(
        tmp_path / "straight" / "results.jsonl")


def test_model_options_reach_the_model_and_bad_ones_are_explained(capsys):
    assert ablation.parse_model_options("padding=VALID,channels=8") == (("padding", "VALID"),
                                                                       ("channels", 8))
    assert ablation.main(["--model-options=padding", "--out=/nonexistent"]) == 2
    assert "key=value" in capsys.readouterr().out


def test_a_folder_another_run_is_writing_to_is_refused(tmp_path, capsys):
    pytest.importorskip("fcntl")
    out = tmp_path / "run"
    with results.lock_workdir(out):
        assert _run(out) == 2
    printed = capsys.readouterr().out
    assert "Another run (pid" in printed and "different output folder" in printed
    assert not (out / "results.jsonl").exists()


@pytest.mark.slow
def test_sigterm_in_the_middle_of_a_fedavg_round_ends_the_process_and_the_rerun_resumes_it(
        reference_data_dir, tmp_path):
    """SIGTERM inside a FedAvg round (5 pieces of one local step on 10 clients x 320
    MNIST images, each piece saved): the process is gone within seconds and keeps the
    finished pieces; the rerun of the same command resumes inside the round and ends
    with the row of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from jgi.checkpointing import PIECES_PER_ROUND_MAX

    flags = ["--model=cnn", "--dataset=mnist", "--preset=cpu", "--no-privacy", "--rounds=1",
             "--fedavg-data-cap=320,20,100", "--piece-steps=1", "--no-progress"]
    out = tmp_path / "run"
    command = [sys.executable, "-m", "experiments.ablation", *flags, "--checkpoint-seconds=0",
               f"--out={out}"]
    env = {**os.environ, "JGI_DATA_DIR": str(reference_data_dir)}

    def pieces_saved():
        return [int(p.name[5:]) % PIECES_PER_ROUND_MAX
                for p in out.glob("checkpoints/*/step_*") if p.name[5:].isdigit()]

    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    deadline = time.monotonic() + 600
    while not any(pieces_saved()):  # the first piece of round 1 is saved: mid-round
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint inside the round after 10 min"
        time.sleep(0.02)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    printed = proc.communicate(timeout=120)[0]
    took = time.monotonic() - sent
    assert proc.returncode == 130, printed
    assert "interrupted" in printed and "Rerun the same command to resume" in printed
    assert took < 10, f"the process took {took:.0f} s to end after SIGTERM"
    kept = max(pieces_saved())
    assert 0 < kept < 5, f"the interrupt did not land inside the round: piece {kept}"

    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"resumed from the checkpoint in round 1, after {kept} piece(s)" in rerun.stdout

    # The uninterrupted run, in this process.
    assert ablation.main([*flags, f"--data-dir={reference_data_dir}",
                          f"--out={tmp_path / 'whole'}"]) == 0
    resumed, = results.read_rows(out / "results.jsonl")
    whole, = results.read_rows(tmp_path / "whole" / "results.jsonl")
    assert resumed["row_id"] == whole["row_id"]
    assert resumed["accuracy"] == whole["accuracy"]
    for k, v in whole["history"].items():
        np.testing.assert_allclose(resumed["history"][k], v, rtol=1e-6, err_msg=k)
