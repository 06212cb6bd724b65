"""The dp_candidates figure: one line per requested row, read from what the run saved."""

import json

import numpy as np

from experiments import dp_candidates_figure


def test_figure_from_saved_rows_and_a_missing_row_is_named(tmp_path, capsys):
    (tmp_path / "reconstructions").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    rows = {"a1": ("none", "DP + CVB"), "b2": ("dp-estimate", "DP + CVB")}
    for rid, (cand, stack) in rows.items():
        np.savez_compressed(tmp_path / "reconstructions" / f"{rid}.npz",
                            originals=rng.random((3, 6, 6, 1)),
                            reconstructions=rng.random((3, 6, 6, 1)), ssim=np.zeros(3))
        lines.append(json.dumps({"row_id": rid, "candidate": cand, "stack": stack}))
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    png = tmp_path / "fig.png"
    assert dp_candidates_figure.main([f"--out={tmp_path}", "--rows=none:DP + CVB;"
                                      "dp-estimate:DP + CVB", f"--png={png}"]) == 0
    assert png.stat().st_size > 1000  # a 3x3 grid of images (6.9 kB when measured)
    assert dp_candidates_figure.main([f"--out={tmp_path}", "--rows=none:DO + DP",
                                      f"--png={png}"]) == 2
    assert "no row for [('none', 'DO + DP')]" in capsys.readouterr().out
