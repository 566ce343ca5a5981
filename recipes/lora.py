"""LoRA fine-tuning with InfoNCE under a Matryoshka objective.

    accelerate launch recipes/lora.py
    accelerate launch recipes/lora.py --config recipes/configs/lora.yaml lora.rank=16 output_dir=runs/lora

Method: as recipes/matryoshka.py, but the encoder is frozen and low-rank adapters on its linear
layers are trained (Hu et al., 2021): a few percent of the parameters and of the optimizer
memory. The run saves the adapter alone (run_dir/adapter) and a merged, standalone
sentence-transformers model (run_dir/final).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
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
from trainer.models.lora import LoraSettings, apply_lora, lora_targets, merge_lora, save_adapter  # noqa: E402

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "lora.yaml"


@dataclass
class LoraRecipeConfig(FineTuneConfig):
    lora: LoraSettings = field(default_factory=LoraSettings)


def config(argv: list[str] | None = None) -> LoraRecipeConfig:
    """The resolved config: defaults, then the YAML (``--config`` or the shipped one), then ``key=value`` overrides."""
    return load_config(LoraRecipeConfig, argv, DEFAULT_CONFIG)


def main(argv: list[str] | None = None) -> int:
    cfg = config(argv)

    def adapt(model):
        trainable, total = apply_lora(model, cfg.lora)
        print(f"LoRA: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)")

    def export(model, run_dir):
        save_adapter(model, run_dir / "adapter")
        return merge_lora(model)

    return fine_tune(cfg, "lora", adapt, export, check=lambda model: lora_targets(model, cfg.lora))


if __name__ == "__main__":
    sys.exit(cli_main(main))
