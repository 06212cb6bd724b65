"""report.html: written by every appended row, self-contained, and shown by a browser.

The rows are written directly with :func:`jgi.results.append_row` (the hook every
experiment goes through) instead of running an attack, to keep the test at seconds: an
attack row with its ``reconstructions/<row_id>.npz`` (as the pipeline saves it), a
utility row with its FedAvg history, a row of another experiment that names a PNG
(as the high-resolution study does), that experiment's Markdown table and a figure.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from jgi import report, results
from jgi.records import AttackRow, UtilityRow

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PNG = b"\x89PNG\r\n\x1a\n"


def _tiny_png(path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.imsave(path, np.linspace(0, 1, 64).reshape(8, 8), cmap="gray")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A folder as the experiments leave it; report.html written by the append hook."""
    out = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(0)
    originals = rng.uniform(size=(3, 8, 8, 1)).astype(np.float32)
    recon = np.clip(originals + 0.1 * rng.normal(size=originals.shape), 0, 1)
    ssim = [0.9, 0.4, 0.7]
    (out / "reconstructions").mkdir()
    np.savez_compressed(out / "reconstructions" / "a1.npz", originals=originals,
                        reconstructions=recon, ssim=np.asarray(ssim))
    attack = AttackRow(model="cnn", dataset="mnist", defenses=("dp",), attack="cdia",
                       per_victim_ssim=tuple(ssim), row_id="a1", n_victims=3,
                       ssim_mean=float(np.mean(ssim)), ssim_std=float(np.std(ssim)),
                       psnr_mean=20.0, asr=2 / 3, wall_seconds=1.5, compile_seconds=0.5,
                       config={"attack": "cdia", "seed": 0})
    utility = UtilityRow(model="cnn", dataset="mnist", defenses=("dp",), accuracy=0.9,
                         row_id="u1", final_accuracy=0.9, max_accuracy=0.92, best_round=2,
                         rounds=3, history={"train_loss": [1.0, 0.5, 0.4],
                                            "val_loss": [1.1, 0.6, 0.6],
                                            "test_accuracy": [0.5, 0.92, 0.9]},
                         wall_seconds=3.0)
    _tiny_png(out / "grid_64_paper.png")
    other = {"experiment": "highres", "method": "paper", "resolution": 64, "ssim": 0.8,
             "seconds": 2.0, "grid": "grid_64_paper.png",  # and a federated-study curve:
             "curve": {"round": [5, 10], "test_accuracy": [0.3, 0.6],
                       "heldout_accuracy": [0.35, 0.62]}}
    (out / "highres.md").write_text("## Table I-style\n\n| side | SSIM |\n|---|---|\n"
                                    "| 64 | 0.800 |\n")
    _tiny_png(out / "fig5.png")
    with pytest.MonkeyPatch.context() as mp:  # on even where the suite switches it off
        mp.setenv(report.ENV_SWITCH, "1")
        for row in (attack.to_json(), utility.to_json(), other):
            results.append_row(out / "results.jsonl", row)
    return out


def test_every_appended_row_refreshes_a_self_contained_report(run_folder):
    text = (run_folder / "report.html").read_text()
    sections = re.findall(r'<section class="row" id="row-(\d+)"', text)
    assert sections == ["0", "1", "2"]  # one section per row of results.jsonl
    # Nothing is fetched at view time: every image is inline, no external script/style.
    assert not re.search(r"""(src|href)=["'](?!data:image/png;base64,)""", text)
    assert "http://" not in text and "https://" not in text
    # The paper's columns (Table 4, MNIST DP row: 0.93 ± 0.06, ASR 100, acc 99.06) and
    # the other experiment's own table.
    assert "Paper (CDIA) SSIM" in html.unescape(text) and "0.93 (± 0.06)" in text
    assert "Table I-style" in text and "<td>0.800</td>" in text
    # grid (npz), histogram, curve, the row's named PNG and the unreferenced figure.
    for alt, n in (("reconstruction grid", 1), ("SSIM histogram", 1), ("accuracy curve", 2),
                   ("grid", 1), ("fig5.png", 1)):
        assert text.count(f'alt="{alt}"') == n, alt
    assert "<h3>highres</h3>" in text  # the generic table of the other experiment's fields
    assert text.count('alt="grid_64_paper.png"') == 0  # shown with its row, not twice
    assert "compile_seconds" in text and "&quot;attack&quot;: &quot;cdia&quot;" in text


def test_a_report_failure_never_loses_or_breaks_the_row(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("figure exploded")

    monkeypatch.setenv(report.ENV_SWITCH, "1")
    monkeypatch.setattr(report, "render", broken)
    results.append_row(tmp_path / "results.jsonl", {"row_id": "x"})
    assert [r["row_id"] for r in results.read_rows(tmp_path / "results.jsonl")] == ["x"]
    assert not (tmp_path / "report.html").exists()
    err = capsys.readouterr().err
    assert "report.html" in err and "figure exploded" in err and "unaffected" in err
    monkeypatch.setenv(report.ENV_SWITCH, "0")  # switched off: not even tried
    monkeypatch.setattr(report, "render", lambda *a, **k: pytest.fail("rendered"))
    results.append_row(tmp_path / "results.jsonl", {"row_id": "y"})
    assert len(results.read_rows(tmp_path / "results.jsonl")) == 2


def test_the_report_loads_in_headless_chromium(run_folder, tmp_path):
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless browser: none of " + ", ".join(BROWSERS) + " is on PATH "
                    "(Debian: apt-get install -y chromium)")
    page = (run_folder / "report.html").resolve()
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
         "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1280,1600", f"--screenshot={shot}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "HOME": str(tmp_path)})
    print(f"screenshot: {shot}")
    dom = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Console messages (console.error, uncaught exceptions) are logged as "...:CONSOLE".
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    # The page ran its load handler: every image decoded, none broken.
    n_images = (run_folder / "report.html").read_text().count("<img ")
    assert n_images == 6  # grid + histogram, curve, the row's PNG + curve, fig5.png
    assert f'data-images-loaded="{n_images}"' in dom and 'data-images-broken="0"' in dom
    assert len(re.findall(r'<section class="row"', dom)) == 3
    assert shot.read_bytes()[:8] == PNG and shot.stat().st_size > 20_000
