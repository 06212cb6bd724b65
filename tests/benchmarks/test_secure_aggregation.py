"""The secure-aggregation benchmark runs every scheme side by side at toy scale."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import secure_aggregation  # noqa: E402

from jgi.fl.secure import he  # noqa: E402


def test_every_scheme_is_measured_against_plaintext(capsys):
    assert secure_aggregation.main(["--clients=4", "--models=", "--lengths=40",
                                    "--paillier-bits=512", "--dropout=0.25"]) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    schemes = [r["scheme"] for r in rows]
    expected = ["plaintext", "secagg", "secagg+", "lightsecagg"] + [
        s for s in ("ckks", "paillier") if he.available(s)]
    assert schemes == expected
    for r in rows:
        assert r["max_abs_error"] <= r["error_bound"] + 1e-6, r["scheme"]
        assert r["client_bytes_sent"] > 0 and r["bytes_ratio"] >= 1.0
        assert r["dropped"] == (0 if r["scheme"] == "plaintext" else 1)
    assert "FastSecAgg cost model" in out


def test_runs_over_budget_are_listed_not_run(capsys):
    assert secure_aggregation.main(["--clients=3", "--models=", "--lengths=10000000",
                                    "--schemes=secagg", "--max-gb=0.1"]) == 0
    out = capsys.readouterr().out
    assert "secagg N=3 vector-10000000 (d=10000000): estimated" in out
    assert not any(line.startswith('{"model": "vector-10000000", "scheme": "secagg"')
                   for line in out.splitlines())


def test_bad_flags_are_refused(capsys):
    assert secure_aggregation.main(["--schemes=rot13"]) == 2
    assert secure_aggregation.main(["--clients=1"]) == 2
    assert "--clients takes integers >= 2" in capsys.readouterr().out
