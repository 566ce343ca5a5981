"""Layer-wise learning-rate decay: lower layers of the encoder move less than the top ones.

The lower layers of a pretrained encoder hold general lexical and syntactic features that transfer
to code the model never saw; the top layers are the ones a retrieval objective has to reshape.
Giving layer ``i`` of ``L`` the learning rate ``lr * decay ** (L - 1 - i)`` (the token embeddings
``lr * decay ** L``, anything above the layers the full ``lr``) is the usual way to fine-tune
without wiping those features (ELECTRA, BEiT).
"""

import re

import torch

from trainer.errors import CodetuneError

# The numbered block in a parameter's name: BERT/RoBERTa/MPNet "encoder.layer.3.",
# Llama/Qwen "layers.3.", GPT-2 "h.3.", T5 "block.3.". peft's LoRA names keep the same path.
_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block)\.(\d+)\.")


def layer_depth(name: str, num_layers: int) -> int:
    """0 for embeddings, ``i + 1`` for numbered layer ``i``, ``num_layers + 1`` for anything above."""
    match = _LAYER.search(name)
    if match:
        return int(match.group(1)) + 1
    if "embed" in name:
        return 0
    return num_layers + 1


def layerwise_param_groups(model: torch.nn.Module, lr: float, decay: float) -> list[dict]:
    """AdamW parameter groups over ``model``'s trainable parameters, one per learning rate.

    ``decay`` 1 gives one group at ``lr``. Every trainable parameter is in exactly one group; the
    groups are ordered from the embeddings up, so an optimizer state saved by one run loads into
    the next run of the same config.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if decay == 1:
        return [{"params": [p for _, p in named], "lr": lr}]
    layers = {int(m.group(1)) for n, _ in named if (m := _LAYER.search(n))}
    if not layers:
        raise CodetuneError("train.layer_lr_decay: the model's parameter names have no numbered layers to decay over")
    num_layers = max(layers) + 1
    by_depth: dict[int, list[torch.nn.Parameter]] = {}
    for name, param in named:
        by_depth.setdefault(layer_depth(name, num_layers), []).append(param)
    return [
        {"params": params, "lr": lr * decay ** max(0, num_layers - depth)}
        for depth, params in sorted(by_depth.items())
    ]
