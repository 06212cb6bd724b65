"""Attack a client's defended updates and report privacy in the paper's table layout.

    python -m experiments.ablation --model=cnn --dataset=mnist --out=runs/cnn_mnist
    python -m experiments.ablation --defenses=dp,cvb --out=runs/dp_cvb
    python -m experiments.ablation --defenses=all --preset=smoke    # the 24 stacks
    python -m experiments.ablation --layout=authors   # 32x32x3 MNIST, VALID CNN (the authors')
    python -m experiments.ablation            # no flags: the quick demo (smoke preset)

The pipeline itself is library code (:mod:`jgi.pipeline`); this module only turns
flags into an :class:`~jgi.pipeline.AblationConfig` and calls ``pipeline.run``.
Pipeline (core paper, section 5): load the data -> 10 IID clients -> 128 victims from
client 0 -> for every defense stack, each victim's update (batch size 1, one step,
randomly initialised model, the client's own randomness) -> the attack inverts all
victims in parallel -> SSIM/PSNR/MSE/ASR -> one row per stack appended to
``results.jsonl``, ``table.md`` (Table 4 layout) and ``reconstructions.png`` (one
stack: all victims; several stacks: a few victims per stack, like the paper's Fig. 2).

A finished row is never recomputed: rerunning the same command reuses it. An
interrupted attack resumes from its last checkpoint (saved about every minute under
``<out>/checkpoints``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from jgi import data, defenses, models, pipeline, results
from jgi.fl import fedavg
from jgi.attacks import ATTACKS
from jgi.pipeline import PRESETS, AblationConfig, parse_model_options, parse_stacks

# Re-exported for the other experiment scripts and for users of the old import path.
__all__ = ["AblationConfig", "PRESETS", "build_config", "main", "parse_args",
           "parse_model_options", "parse_stacks"]


def _print(msg: str) -> None:
    print(msg, flush=True)


def build_config(args: argparse.Namespace) -> AblationConfig:
    """Applies the preset, then every flag given explicitly."""
    preset = PRESETS[args.preset]
    attack_cfg = preset["ig"]
    overrides = {k: v for k, v in {
        "max_iters": args.max_iters, "tv_weight": args.tv_weight, "lr": args.lr,
        "chunk_size": args.chunk_size}.items() if v is not None}
    if overrides:
        attack_cfg = dataclasses.replace(attack_cfg, **overrides)
    fed = preset["fedavg"]
    fed_overrides = {k: v for k, v in {"rounds": args.rounds, "patience": args.patience,
                                       "client_batch": args.client_batch}.items()
                     if v is not None}
    if fed_overrides:
        fed = dataclasses.replace(fed, **fed_overrides)
    return AblationConfig(
        model=args.model, model_options=parse_model_options(args.model_options),
        dataset=args.dataset, layout=args.layout, stacks=parse_stacks(args.defenses),
        seeds=args.seeds if args.seeds is not None else preset["seeds"],
        fedavg=None if args.no_utility else fed, privacy=not args.no_privacy,
        fedavg_data_cap=(args.fedavg_data_cap if args.fedavg_data_cap is not None
                         else preset.get("fedavg_data_cap")),
        attack=args.attack,
        victims=args.victims if args.victims is not None else preset["victims"],
        seed=args.seed, labels=args.labels, dropout_rate=args.dropout_rate,
        dp=defenses.DPConfig(clip_norm=args.dp_clip, noise_multiplier=args.dp_sigma),
        prune_rate=args.prune_rate, ig=attack_cfg, preset=args.preset,
        data_dir=args.data_dir, data_source=args.data_source, verify=not args.no_verify,
        progress=not args.no_progress, checkpoint_seconds=args.checkpoint_seconds,
        fedavg_piece_steps=args.piece_steps)


def _data_cap(text: str) -> tuple[int, int, int]:
    try:
        cap = tuple(int(v) for v in text.split(","))
    except ValueError:
        cap = ()
    if len(cap) != 3 or min(cap) < 1:
        raise argparse.ArgumentTypeError(
            f"expected three positive integers TRAIN,VAL,TEST such as 180,20,500, got {text!r}")
    return cap


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.ablation",
        description="Gradient inversion on a federated client's (defended) updates, "
                    "reported in the layout of the core paper's Table 4.")
    parser.add_argument("--model", default="cnn", choices=sorted(models.MODELS))
    parser.add_argument("--model-options", default=None,
                        help="extra model options, e.g. precode_position=classifier (PRECODE "
                             "just before the classifier; the default, slot0, puts it where the "
                             "CVB sits) or padding=VALID")
    parser.add_argument("--dataset", default="mnist", choices=sorted(data.DATASETS))
    parser.add_argument("--layout", default="jgi", choices=data.LAYOUTS,
                        help="jgi (default: native shapes, MNIST 28x28x1, the CNN with SAME "
                             "padding) or authors (the paper's authors' layout: every image "
                             "32x32x3, MNIST resized and repeated over 3 channels, the CNN with "
                             "VALID padding, 65,962 parameters); for the whole table, recorded "
                             "in every row")
    parser.add_argument("--defenses", default="none",
                        help="'none', a stack like 'dp,cvb', several stacks separated by "
                             "';', 'all' (the paper's 24) or 'table5'. Defenses: "
                             + ", ".join(defenses.DEFENSE_NAMES))
    parser.add_argument("--attack", default="cdia", choices=list(ATTACKS),
                        help="the attack (default cdia, as in the paper's Table 4; it equals IG "
                             "when no defense or only DP is used)")
    parser.add_argument("--victims", type=int, default=None,
                        help="victim images (paper preset: 128; smoke: 8)")
    parser.add_argument("--max-iters", type=int, default=None,
                        help="attack iterations per victim (paper preset: 20000)")
    parser.add_argument("--tv-weight", type=float, default=None,
                        help="total-variation weight (default 0.01, the paper's)")
    parser.add_argument("--lr", type=float, default=None, help="attack learning rate (1)")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="iterations per compiled chunk (100)")
    parser.add_argument("--dropout-rate", type=float, default=defenses.stack.PAPER_DROPOUT_RATE)
    parser.add_argument("--dp-clip", type=float, default=defenses.stack.PAPER_DP.clip_norm,
                        help="DP-SGD clipping norm tau (20)")
    parser.add_argument("--dp-sigma", type=float,
                        default=defenses.stack.PAPER_DP.noise_multiplier,
                        help="DP-SGD noise multiplier sigma (1e-4; Table 1 uses 1e-3)")
    parser.add_argument("--prune-rate", type=float,
                        default=defenses.stack.PAPER_PRUNE_FRACTION,
                        help="gradient pruning fraction (0.5; Table 2 uses 0.9-0.99)")
    parser.add_argument("--labels", default="known", choices=pipeline.LABEL_MODES)
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--seeds", type=int, default=None,
                        help="number of seeds (paper preset: 3; cpu and smoke: 1)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="maximum FedAvg rounds (paper: 300; cpu: 20; smoke: 2)")
    parser.add_argument("--patience", type=int, default=None,
                        help="FedAvg early-stopping patience in rounds (paper: 40)")
    parser.add_argument("--client-batch", type=int, default=None,
                        help="FedAvg clients trained at once (default all; fewer need less "
                             "memory, e.g. 1 for ResNet-18 with DP on a small machine)")
    parser.add_argument("--no-utility", action="store_true",
                        help="skip federated training (privacy columns only)")
    parser.add_argument("--no-privacy", action="store_true",
                        help="skip the attacks (accuracy column only)")
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    parser.add_argument("--data-dir", default=None,
                        help="folder with mnist.npz / cifar10.npz (default $JGI_DATA_DIR)")
    parser.add_argument("--data-source", default="auto", choices=data.SOURCES)
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the sha256 check of reference data files")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--fedavg-data-cap", type=_data_cap, default=None,
                        metavar="TRAIN,VAL,TEST",
                        help="at most TRAIN training and VAL validation images per client "
                             "and TEST test images in FedAvg (the smoke preset: 180,20,500)")
    parser.add_argument("--piece-steps", type=int, default=fedavg.PIECE_STEPS,
                        help="local steps per piece of a FedAvg round; the run can stop and "
                             f"save between pieces (default {fedavg.PIECE_STEPS}; results do "
                             "not depend on it)")
    parser.add_argument("--checkpoint-seconds", type=float, default=60.0,
                        help="save a running attack's or FedAvg run's state at most this "
                             "often (default 60; an interrupt saves at once)")
    parser.add_argument("--out", default=None,
                        help="output folder (default runs/<model>_<dataset>_<preset>)")
    args = parser.parse_args(argv)
    if args.no_utility and args.no_privacy:
        parser.error("--no-utility and --no-privacy together leave nothing to run")
    for flag in ("victims", "max_iters", "chunk_size", "seeds", "rounds", "patience",
                 "client_batch", "piece_steps"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        argv = ["--preset=smoke"]
        _print("No flags given: running the quick demo, --preset=smoke (CDIA on 8 MNIST "
               "victims, 1,000 iterations; 2 FedAvg rounds). The paper's setting is "
               "--preset=paper (128 victims, 20,000 iterations, 300 rounds, 3 seeds); a "
               "laptop-sized one is --preset=cpu; see --help.")
    args = parse_args(argv)
    try:
        config = build_config(args)
    except ValueError as e:
        _print(f"error: {e}")
        return 2
    out = Path(args.out or f"runs/{config.model}_{config.dataset}_{config.preset}")
    _print(f"config: {json.dumps(dataclasses.asdict(config), default=str)}")
    try:
        with results.sigterm_as_interrupt():
            pipeline.run(config, out)
    except (data.DataError, ValueError, results.FolderBusyError) as e:
        _print(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        _print(f"\ninterrupted. Finished rows are in {out / 'results.jsonl'}; the running "
               f"attack or FedAvg run is checkpointed (every --checkpoint-seconds, and at the "
               f"interrupt for FedAvg) under "
               f"{out / 'checkpoints'}. "
               f"Rerun the same command to resume.")
        return 130
    return 0


def _exit_now(code: int) -> None:
    """Ends the process at once, after an interrupt was reported.

    A compiled FedAvg round or attack chunk already dispatched to XLA cannot be
    cancelled, and the interpreter's normal shutdown waits for it: the process kept
    computing for minutes after printing "interrupted". Every finished row and the last
    checkpoint are already on disk (written atomically), so nothing is lost by not
    waiting; the unfinished round or chunk is redone on resume.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_code = main()
    if exit_code == 130:
        _exit_now(exit_code)
    sys.exit(exit_code)
