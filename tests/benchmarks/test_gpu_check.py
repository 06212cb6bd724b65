"""The prepared GPU check parses its flags and the two commands' flags (dry run) and
summarises the benchmark's JSON lines in the issue's columns."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gpu_check  # noqa: E402


def test_dry_run_checks_both_commands(capsys):
    assert gpu_check.main(["--dry-run", "--data-dir=/nowhere"]) == 0
    out = capsys.readouterr().out
    assert "--attacks=ig,dia,vbia,cdia" in out and "--victims=128" in out
    assert "--dataset=cifar10" in out and "--max-iters=20000" in out
    assert "dry run: flags checked" in out


def test_throughput_summary_has_ratio_and_peak(tmp_path):
    common = {"input_shape": "28x28x1", "attack": "cdia", "victims": 128,
              "device": "gpu:H200", "num_devices": 1, "peak_flops": 5e14}
    log = tmp_path / "t.log"
    log.write_text("noise\n" + "\n".join(json.dumps({**common, **r}) for r in [
        {"impl": "jgi-vmap", "victim_iters_per_s": 4000.0, "peak_fraction": 0.25},
        {"impl": "jgi-loop", "victim_iters_per_s": 1000.0, "peak_fraction": 0.06}]))
    lines = gpu_check.summarize_throughput(log)
    assert lines[0].startswith("device gpu:H200 x1, matmul peak 500000 GFLOP/s")
    assert "| 28x28x1 | cdia | 4,000 | 1,000 | 4.00x | - | 25.0% |" in lines
