"""The run pipeline as library code: config -> victims -> client updates -> attack ->
scores -> rows -> tables and figures.

    from jgi import pipeline
    config = pipeline.preset_config("smoke", stacks=(("dropout", "prune"),))
    rows = pipeline.run(config, "runs/demo")

``experiments/ablation.py`` is the command line over this package (flags -> config ->
:func:`run` -> print).
"""

from jgi.pipeline.config import (
    LABEL_MODES,
    PRESETS,
    STREAMS,
    AblationConfig,
    RunKeys,
    parse_model_options,
    parse_stacks,
    preset_config,
)
from jgi.pipeline.rows import Victims, attack_row, device_description, utility_row, victim_set
from jgi.pipeline.run import run, run_rows, write_outputs_for

__all__ = [
    "AblationConfig",
    "LABEL_MODES",
    "PRESETS",
    "RunKeys",
    "STREAMS",
    "Victims",
    "attack_row",
    "device_description",
    "parse_model_options",
    "parse_stacks",
    "preset_config",
    "run",
    "run_rows",
    "utility_row",
    "victim_set",
    "write_outputs_for",
]
