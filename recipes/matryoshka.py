"""Full fine-tuning with InfoNCE under a Matryoshka objective.

    accelerate launch recipes/matryoshka.py                                  # embedded default, stdlib data
    accelerate launch recipes/matryoshka.py --config recipes/configs/bge.yaml train.lr=1e-5
    accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16 recipes/matryoshka.py output_dir=runs/x
    accelerate launch recipes/matryoshka.py output_dir=runs/x resume_from_checkpoint=latest

Method: queries (docstring summaries) and code are embedded by one encoder; each query's code is
its positive, and every other document of the global batch (all processes), plus mined hard
negatives, is a negative. The InfoNCE loss is summed over truncated, re-normalised prefixes of
the embedding, so 256/128/64-dim embeddings stay good. The encoder is scored before and after
training on functions from held-out files (see trainer/finetune.py for the steps).
"""

from __future__ import annotations

import sys
from pathlib import Path

# From a checkout, trainer/ may not be installed. Installed, this file is trainer/recipes/NAME.py,
# and trainer/ itself must not go on sys.path (its modules would shadow packages such as `evaluate`).
if (Path(__file__).resolve().parents[1] / "trainer").is_dir():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.preemption import StopRequest  # noqa: E402

StopRequest()  # watch for SIGUSR1 from the first moment: the imports below take seconds

from trainer.config import load_config  # noqa: E402
from trainer.errors import cli_main  # noqa: E402
from trainer.finetune import FineTuneConfig, fine_tune  # noqa: E402

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "matryoshka.yaml"


def config(argv: list[str] | None = None) -> FineTuneConfig:
    """The resolved config: defaults, then the YAML (``--config`` or the shipped one), then ``key=value`` overrides."""
    return load_config(FineTuneConfig, argv, DEFAULT_CONFIG)


def main(argv: list[str] | None = None) -> int:
    return fine_tune(config(argv), "matryoshka")


if __name__ == "__main__":
    sys.exit(cli_main(main))
