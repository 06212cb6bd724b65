"""How random is each layer's update under a defense stack?

    python -m experiments.gradient_noise --defenses=precode
    python -m experiments.gradient_noise --defenses=precode --model-options=precode_block=0
    python -m experiments.gradient_noise --defenses=dp,cvb --victims=8 --draws=4

For the ablation's victims (same split, victims and model initialisation as
``experiments.ablation`` with the same seed), draws the client's randomness several
times per image and prints, per parameter leaf, its share of the update's squared norm
and the cosine between updates under two draws (``jgi.diagnostics.update_noise``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import jax
import numpy as np

from jgi import data, defenses, diagnostics, models, pipeline


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cnn", choices=sorted(models.MODELS))
    parser.add_argument("--model-options", default=None, help="e.g. precode_block=0")
    parser.add_argument("--dataset", default="mnist", choices=sorted(data.DATASETS))
    parser.add_argument("--defenses", default="none", help="one stack, e.g. 'dp,cvb'")
    parser.add_argument("--victims", type=int, default=8)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--dp-sigma", type=float,
                        default=defenses.stack.PAPER_DP.noise_multiplier)
    parser.add_argument("--dp-clip", type=float, default=defenses.stack.PAPER_DP.clip_norm)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--data-source", default="auto", choices=data.SOURCES)
    args = parser.parse_args(argv)
    if args.victims < 1 or args.draws < 2:
        parser.error(f"need --victims >= 1 and --draws >= 2, got {args.victims} and "
                     f"{args.draws}")
    try:
        stacks = pipeline.parse_stacks(args.defenses)
        if len(stacks) != 1:
            raise ValueError(f"--defenses takes one stack here, got {len(stacks)}: "
                             f"{args.defenses!r}.")
        config = pipeline.AblationConfig(
            model=args.model, model_options=pipeline.parse_model_options(args.model_options),
            dataset=args.dataset, stacks=stacks, victims=args.victims, seed=args.seed,
            dp=defenses.DPConfig(clip_norm=args.dp_clip, noise_multiplier=args.dp_sigma),
            data_dir=args.data_dir, data_source=args.data_source)
        stack = config.stack(stacks[0])
        model = models.get(config.model, **dict(config.model_options), **stack.model_options())
        dataset = data.load(config.dataset, data_dir=config.data_dir, source=config.data_source)
    except (ValueError, data.DataError) as e:
        print(f"error: {e}")
        return 2
    victims = pipeline.victim_set(config, dataset)
    params = model.init(victims.keys.model, dataset.info.image_shape)
    report = diagnostics.update_noise(model, params, victims.x, victims.y,
                                      jax.random.key(args.seed), stack, args.draws)
    print(f"{model.name} on {dataset.info.name}, defenses {stack.names or 'none'}, "
          f"{args.victims} images x {args.draws} draws of the client's randomness "
          f"(model options {dict(config.model_options) or 'default'})\n")
    norms = report.update_norms
    print(f"update norm over images and draws: median {float(np.median(norms)):.3g} "
          f"(min {float(norms.min()):.3g}, max {float(norms.max()):.3g})\n")
    print(report.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
