import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("evosax", reason="GGL needs evosax (pip install evosax==0.3.2)")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import generative_throughput  # noqa: E402


def test_benchmark_reports_vmap_and_loop(capsys):
    # The smallest run: 2 victims, population 4, one generation, a tiny generator.
    rc = generative_throughput.main(["--victims=2", "--population=4", "--generations=1",
                                     "--repeats=1", "--width=2", "--latent-dim=4",
                                     "--json"])
    assert rc == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["impl"] for r in rows] == ["jgi-vmap", "jgi-loop"]
    for r in rows:
        # victim-evaluations = victims x population x generations = 8 per call.
        assert r["victim_evals_per_s"] == pytest.approx(8 / r["seconds"], rel=0.1)
        assert r["victim_evals_per_s"] > 0
