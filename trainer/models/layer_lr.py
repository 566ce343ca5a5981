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
_NO_LAYERS = "train.layer_lr_decay: the model's parameter names have no numbered layers to decay over"


def layer_index(name: str) -> int | None:
    """The number of the encoder layer that parameter ``name`` sits in; None outside the layers."""
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def check_layer_lr_decay(model: torch.nn.Module, decay: float) -> None:
    """Raise the one-line error :func:`layerwise_param_groups` would, at setup, before any model work.

    Looks at every parameter, trainable or not: LoRA adapters and frozen embeddings, added later,
    keep the numbered paths of the layers they sit in.
    """
    if decay != 1 and not any(layer_index(n) is not None for n, _ in model.named_parameters()):
        raise CodetuneError(_NO_LAYERS)


def layerwise_param_groups(model: torch.nn.Module, lr: float, decay: float) -> list[dict]:
    """AdamW parameter groups over ``model``'s trainable parameters, one per learning rate.

    ``decay`` 1 gives one group at ``lr``. Every trainable parameter is in exactly one group; the
    groups are ordered from the embeddings up, so an optimizer state saved by one run loads into
    the next run of the same config. Depth 0 is the embeddings, ``i + 1`` numbered layer ``i``,
    ``L + 1`` anything above the layers (pooler, projection), which trains at the full ``lr``.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if decay == 1:
        return [{"params": [p for _, p in named], "lr": lr}]
    indexed = [(layer_index(n), n, p) for n, p in named]
    layers = {i for i, _, _ in indexed if i is not None}
    if not layers:
        raise CodetuneError(_NO_LAYERS)
    num_layers = max(layers) + 1
    by_depth: dict[int, list[torch.nn.Parameter]] = {}
    for index, name, param in indexed:
        depth = index + 1 if index is not None else 0 if "embed" in name else num_layers + 1
        by_depth.setdefault(depth, []).append(param)
    return [
        {"params": params, "lr": lr * decay ** max(0, num_layers - depth)}
        for depth, params in sorted(by_depth.items())
    ]
