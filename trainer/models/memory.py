"""What a model keeps in memory while it trains: the dtype of its trained weights, and its activations.

* Trained weights are fp32. AdamW's update is about ``lr`` in size, and a bf16 weight cannot hold a
  change below 2^-8 of itself: at lr 1e-5 every update of a weight of 0.02 would round away. So a
  decoder loaded in bf16 trains fp32 copies of what it updates (all of it in full fine-tuning,
  the adapters under LoRA) while its frozen weights stay bf16, which is where the memory goes.
* Gradient checkpointing (Chen et al., "Training Deep Nets with Sublinear Memory Cost", 2016)
  keeps only each layer's input in the forward pass and recomputes the rest during backward:
  activation memory of one layer instead of all of them, for one more forward pass of compute.
  torch's checkpoint restores the RNG state for the recomputation, so dropout is the same in both,
  and GradCache's second forward (which restores the RNG itself) stays equal to its first.
"""

from __future__ import annotations

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer

from trainer.errors import CodetuneError
from trainer.models import ModelConfig


def prepare_for_training(model: SentenceTransformer, cfg: ModelConfig) -> None:
    """Make trained weights fp32 and, if asked, freeze the token embeddings, set the attention
    dropout and turn on gradient checkpointing; in place, after any LoRA.

    Raises:
        CodetuneError: as :func:`check_training_settings` does, which a recipe calls at setup.
    """
    if cfg.freeze_embeddings:
        freeze_token_embeddings(model)
    if cfg.freeze_layers:
        freeze_lower_layers(model, cfg.freeze_layers)
    if cfg.attention_dropout is not None:
        set_attention_dropout(model, cfg.attention_dropout)
    if cfg.hidden_dropout is not None:
        set_hidden_dropout(model, cfg.hidden_dropout)
    for p in model.parameters():
        if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16):
            p.data = p.data.float()
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)


def check_training_settings(model: SentenceTransformer, cfg: ModelConfig) -> None:
    """Raise now the error :func:`prepare_for_training` would raise after the base evaluation.

    Changes nothing. The same targets are found before and after LoRA: :func:`hf_models` looks
    through a peft wrapper.
    """
    if cfg.freeze_embeddings:
        _embedding_tables(model)
    if cfg.freeze_layers:
        _lower_layers(model, cfg.freeze_layers)
    if cfg.attention_dropout is not None:
        _attention_dropouts(model)
    if cfg.hidden_dropout is not None:
        _hidden_dropouts(model)
    if cfg.gradient_checkpointing:
        _checkpointable(model)


def freeze_token_embeddings(model: SentenceTransformer) -> None:
    """Keep each transformer's input token embeddings at the base model's values.

    Fine-tuning on one codebase moves only the embeddings of the tokens it contains, so the rest
    of the vocabulary could drift out of line with the layers above. Measured on the default run
    (docs/quality.md), freezing changed out-of-domain NDCG@10 by under 0.1 at every dim: the
    drift is not what limits transfer at this budget. What it does buy is memory: AdamW keeps no
    state for the largest matrix of an encoder (48 % of all-MiniLM-L6-v2's weights, 21 % of a
    bge-base's).

    Raises:
        CodetuneError: when the model has no Hugging Face transformer with input embeddings.
    """
    for table in _embedding_tables(model):
        table.weight.requires_grad_(False)


def _embedding_tables(model: SentenceTransformer) -> list[torch.nn.Module]:
    tables = [m.get_input_embeddings() for m in hf_models(model) if hasattr(m, "get_input_embeddings")]
    if not tables:
        raise CodetuneError("model.freeze_embeddings: this model has no transformer token embeddings to freeze")
    return tables


def freeze_lower_layers(model: SentenceTransformer, n: int) -> None:
    """Keep every transformer's embeddings and its lowest ``n`` layers at the base model's values.

    Nothing below layer ``n`` needs a gradient, so backward stops there: a step skips about
    ``n / layers`` of its backward pass, and AdamW keeps no state for those weights.

    Raises:
        CodetuneError: when a transformer has no layer stack, or ``n`` is not below its depth.
    """
    for module in _lower_layers(model, n):
        module.requires_grad_(False)


def _lower_layers(model: SentenceTransformer, n: int) -> list[torch.nn.Module]:
    found = []
    for base in hf_models(model):
        depth = getattr(base.config, "num_hidden_layers", None)
        stacks = [m for m in base.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == depth]
        embeddings = getattr(base, "embeddings", None) or getattr(base, "embed_tokens", None)
        if not stacks or embeddings is None:
            raise CodetuneError(f"model.freeze_layers: no layer stack found in {type(base).__name__}")
        if n >= depth:
            raise CodetuneError(f"model.freeze_layers: {n} must be below the model's {depth} layers")
        found += [embeddings, *stacks[0][:n]]
    if not found:
        raise CodetuneError("model.freeze_layers: this model has no transformer to freeze")
    return found


def set_attention_dropout(model: SentenceTransformer, p: float) -> int:
    """Set the dropout on attention probabilities of every transformer layer to ``p``; returns how
    many attention modules were changed.

    torch's fused CPU attention (``_scaled_dot_product_flash_attention_for_cpu``) has no dropout:
    with any attention dropout, scaled_dot_product_attention falls back to the math path, which
    keeps each layer's (batch, heads, seq, seq) probabilities and dropout mask for backward. For
    32 documents of 256 tokens that is 4.1 GB of peak memory against 2.0 GB at ``p=0`` on
    all-MiniLM-L6-v2 (bench/train.py measures it in a run). CUDA's fused kernels do support
    dropout, so there this is only a regularisation choice. The saved config keeps its value:
    it matters only in training.

    Raises:
        CodetuneError: when the model has no attention dropout this knows how to set.
    """
    found = _attention_dropouts(model)
    for module in found:
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        else:
            module.attention_dropout = p
    return len(found)


def _attention_dropouts(model: SentenceTransformer, required: bool = True) -> list[torch.nn.Module]:
    """The attention-probability dropouts: an nn.Dropout (BERT, RoBERTa, XLM-R, MPNet, DistilBERT)
    or a module whose forward reads a float ``attention_dropout`` (Qwen/Llama-style attention)."""
    found = []
    for base in hf_models(model):
        for module in base.modules():
            if type(module).__name__.endswith("SelfAttention") and isinstance(getattr(module, "dropout", None), torch.nn.Dropout):
                found.append(module.dropout)
            elif isinstance(getattr(module, "attention_dropout", None), float):
                found.append(module)
    if not found and required:
        raise CodetuneError(f"model.attention_dropout: no attention dropout found in this model ({_names(hf_models(model))})")
    return found


def set_hidden_dropout(model: SentenceTransformer, p: float) -> int:
    """Set every transformer dropout that is not on attention probabilities (the embeddings'
    output, each layer's attention output and feed-forward output) to ``p``; returns how many.

    On CPU, drawing these masks (``bernoulli_``) is about 8 % of a default training step, and
    each mask is kept for backward. The saved config keeps its value: it matters only in training.

    Raises:
        CodetuneError: when the model has no such dropout (decoders such as Qwen3 train without).
    """
    found = _hidden_dropouts(model)
    for module in found:
        module.p = p
    return len(found)


def _hidden_dropouts(model: SentenceTransformer) -> list[torch.nn.Dropout]:
    attention = {id(m) for m in _attention_dropouts(model, required=False)}
    # peft's adapter dropouts sit inside the layers too; they are lora.dropout's, not this knob's.
    found = [m for base in hf_models(model) for name, m in base.named_modules()
             if isinstance(m, torch.nn.Dropout) and id(m) not in attention and "lora_dropout" not in name]
    if not found:
        raise CodetuneError(f"model.hidden_dropout: no hidden dropout found in this model ({_names(hf_models(model))})")
    return found


def enable_gradient_checkpointing(model: SentenceTransformer) -> None:
    """Recompute each transformer layer's activations in backward (non-reentrant checkpointing).

    Non-reentrant checkpointing needs no gradient on the layer inputs, so it works under LoRA,
    where the embeddings are frozen.

    Raises:
        CodetuneError: when the model has no Hugging Face transformer that supports it.
    """
    for base in _checkpointable(model):
        checkpoint_layers(base)


def _checkpointable(model: SentenceTransformer) -> list[torch.nn.Module]:
    bases = hf_models(model)
    if not bases or not all(getattr(m, "supports_gradient_checkpointing", False) for m in bases):
        raise CodetuneError(f"model.gradient_checkpointing: not supported by this model ({_names(bases)})")
    return bases


def _names(models: list[torch.nn.Module]) -> str:
    """What an error says the model is: its Hugging Face classes."""
    return ", ".join(type(m).__name__ for m in models) or "no Transformer module"


def hf_models(model: SentenceTransformer) -> list[torch.nn.Module]:
    """The Hugging Face model inside each of ``model``'s Transformer modules."""
    found = [m.model for m in model.modules() if isinstance(m, Transformer)]
    # Under LoRA the Hugging Face model sits inside a PeftModel.
    return [m.get_base_model() if hasattr(m, "get_base_model") else m for m in found]


def checkpoint_layers(model: torch.nn.Module) -> None:
    """Non-reentrant checkpointing on one Hugging Face ``PreTrainedModel``."""
    # transformers 5 renamed it; 4.x only has gradient_checkpointing_enable.
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable({"use_reentrant": False})
