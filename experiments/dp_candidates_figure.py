"""The reconstructions of ``experiments.dp_candidates`` rows, one line of victims per row.

    python -m experiments.dp_candidates_figure --out=runs/h16/grid3k \
        --rows="none:DP + CVB;dp-estimate:DP + CVB;none:DO + DP" --png=fig.png

Reads ``<out>/results.jsonl`` and the saved ``<out>/reconstructions/<row_id>.npz``
(nothing is recomputed); the first line is the originals, every later one a
(candidate, stack) row with each victim's SSIM (jgi's) above it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from jgi import results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.dp_candidates_figure",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the dp_candidates output folder")
    parser.add_argument("--rows", required=True,
                        help="';' list of candidate:stack, e.g. 'none:DP + CVB'")
    parser.add_argument("--png", required=True)
    args = parser.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    by_key = {(r["candidate"], r["stack"]): r
              for r in results.read_rows(out / "results.jsonl")}
    keys = [tuple(k.split(":", 1)) for k in args.rows.split(";") if k.strip()]
    missing = [k for k in keys if k not in by_key]
    if missing:
        print(f"error: no row for {missing} in {out / 'results.jsonl'}; rows there: "
              f"{sorted(by_key)}", flush=True)
        return 2
    loaded = [np.load(out / "reconstructions" / f"{by_key[k]['row_id']}.npz") for k in keys]
    n = loaded[0]["originals"].shape[0]
    fig, ax = plt.subplots(len(keys) + 1, n, figsize=(n, 1.15 * (len(keys) + 1)),
                           squeeze=False)
    for i in range(n):
        ax[0, i].imshow(loaded[0]["originals"][i].squeeze(), cmap="gray", vmin=0, vmax=1)
    ax[0, 0].set_ylabel("original", fontsize=6)
    for j, (key, d) in enumerate(zip(keys, loaded, strict=True), start=1):
        for i in range(n):
            ax[j, i].imshow(d["reconstructions"][i].squeeze(), cmap="gray", vmin=0, vmax=1)
            ax[j, i].set_title(f"{d['ssim'][i]:.2f}", fontsize=6, pad=1)
        ax[j, 0].set_ylabel(f"{key[0]}\n{key[1]}", fontsize=6)
    for a in ax.flat:
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    fig.savefig(args.png, dpi=80)
    print(f"wrote {args.png}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
