"""Rebuilds the small real-image samples shipped in ``jgi/data/embedded``.

The samples are the first images of the official training and test orders, taken from
the verified reference files, so anyone can check them against the full datasets:

    python -m experiments.make_embedded_data --data-dir=../shared/data

They exist so that ``python -m experiments.ablation`` runs on a fresh offline machine.
They are real images (never synthetic), but far too few for the paper's federated
utility numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from jgi.data import DATASETS
from jgi.data.datasets import EMBEDDED_DIR, sha256_of

# Number of (train, test) images per embedded sample. 10 clients x 10% validation need
# at least 1,423 training images for a 128-image victim set on one client.
SAMPLE_SIZES = {"mnist": (2000, 500), "cifar10": (1500, 300)}


def build(data_dir: Path, out_dir: Path = EMBEDDED_DIR) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (n_train, n_test) in SAMPLE_SIZES.items():
        info = DATASETS[name]
        src = data_dir / info.file_name
        if sha256_of(src) != info.sha256:
            raise SystemExit(f"{src} does not match the published sha256; refusing to sample it.")
        with np.load(src) as d:
            kx, ky, kxt, kyt = info.keys
            arrays = {
                kx: d[kx][:n_train],
                ky: d[ky][:n_train],
                kxt: d[kxt][:n_test],
                kyt: d[kyt][:n_test],
            }
        path = out_dir / f"{name}_sample.npz"
        np.savez_compressed(path, **arrays)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): "
              f"{n_train} train, {n_test} test images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="folder with the reference mnist.npz and cifar10.npz")
    args = parser.parse_args()
    build(args.data_dir)


if __name__ == "__main__":
    main()
