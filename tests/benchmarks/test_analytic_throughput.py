"""The analytic-attacks benchmark runs and prints one JSON record per attack and impl."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import analytic_throughput  # noqa: E402


def test_json_lines_for_vmap_and_loop(capsys):
    analytic_throughput.main(["--attacks=analytic,rtf", "--victims=2", "--repeats=1",
                              "--json"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["attack"], r["impl"]) for r in records] == [
        ("analytic", "vmap"), ("analytic", "loop"), ("rtf", "vmap"), ("rtf", "loop")]
    assert all(r["seconds_per_victim"] > 0 and r["first_call_s"] > 0 for r in records)


def test_unknown_attack_is_refused(capsys):
    with pytest.raises(SystemExit):
        analytic_throughput.main(["--attacks=cafe"])
    assert "valid: analytic, rtf, cpa, rgap" in capsys.readouterr().err
