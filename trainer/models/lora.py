"""LoRA (Hu et al., 2021) on the transformer inside a sentence-transformers model, through peft."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer

from trainer.errors import CodetuneError

# Every linear layer of the transformer: attention projections and the feed-forward block.
_ENCODER = ["query", "key", "value", "dense"]
# Decoders: q/k/v/o attention projections and the gated MLP's gate/up/down (QLoRA's finding:
# adapting every linear layer, MLP included, is what matches full fine-tuning).
_DECODER = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TARGETS = {
    "bert": _ENCODER,
    "roberta": _ENCODER,
    "mpnet": ["q", "k", "v", "o", "dense"],  # all-mpnet-base-v2 (model.name: mpnet-base) names its projections q/k/v/o
    **dict.fromkeys(["qwen2", "qwen3", "llama", "mistral", "gemma", "gemma2"], _DECODER),
}


@dataclass
class LoraSettings:
    rank: int = 8  # higher: more capacity, more trainable parameters (linear in rank)
    alpha: int = 16  # update scale is alpha / rank
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=list)  # empty: every linear layer of the architecture


def _transformer(model: SentenceTransformer) -> Transformer:
    first = model[0]
    if not isinstance(first, Transformer):
        raise CodetuneError(f"lora: the model's first module is {type(first).__name__}, not a Transformer")
    return first


def lora_targets(model: SentenceTransformer, cfg: LoraSettings) -> list[str]:
    """The module names LoRA adapts in ``model``: ``cfg.target_modules``, or the architecture's default.

    A recipe calls this at setup, so that a name that matches nothing is a one-line error before
    the base evaluation, not peft's traceback after it. Stricter than peft, which adapts what
    matches and ignores the rest: a misspelt name would silently leave a layer untrained.

    Raises:
        CodetuneError: for a model without a Transformer first, an architecture with no default,
            or a name that matches no module (peft's rule: the full name, or its last dotted parts).
    """
    module = _transformer(model)
    arch = module.model.config.model_type
    targets = cfg.target_modules or TARGETS.get(arch)
    if not targets:
        raise CodetuneError(f"lora.target_modules: no default for architecture {arch!r}; name the linear layers")
    names = [name for name, _ in module.model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise CodetuneError(f"lora.target_modules: {', '.join(missing)} match no module of this {arch} model")
    return list(targets)


def apply_lora(model: SentenceTransformer, cfg: LoraSettings) -> tuple[int, int]:
    """Freeze the encoder and add LoRA adapters in place.

    Returns:
        (trainable parameters, all parameters) of the model.
    """
    module = _transformer(model)
    peft_cfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=lora_targets(model, cfg))
    try:
        module.model = get_peft_model(module.model, peft_cfg)
    except ValueError as err:  # e.g. a target that is a LayerNorm, which LoRA cannot adapt
        raise CodetuneError(f"lora.target_modules: {str(err).splitlines()[0][:200]}") from None
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def save_adapter(model: SentenceTransformer, folder: Path) -> None:
    """Save only the LoRA weights and config (a few MB), loadable with peft."""
    peft_model = _transformer(model).model
    if not isinstance(peft_model, PeftModel):
        raise CodetuneError("lora: the model has no LoRA adapter to save")
    peft_model.save_pretrained(str(folder))


def merge_lora(model: SentenceTransformer) -> SentenceTransformer:
    """Fold the adapters into the weights, leaving a plain model any sentence-transformers user can load."""
    module = _transformer(model)
    if isinstance(module.model, PeftModel):
        module.model = module.model.merge_and_unload()
    return model
