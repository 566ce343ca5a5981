"""The model card of a run's ``final/`` (and LoRA's ``adapter/``): what a model hub shows, and what a user needs.

sentence-transformers' ``save`` copies the base model's card into a model it did not train, so a
pushed ``final/`` would describe another model. This card says what the model is tuned from (and
the base's licence), by which recipe and config, on which data and split, how it scores before and
after at every Matryoshka dimension, and how to load it. Its front matter is Hugging Face model-card
metadata (``huggingface_hub.ModelCardData``, with a model-index of the held-out results), so a hub
renders it.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCardData, metadata_load, try_to_load_from_cache

from trainer import __version__
from trainer.config import to_dict
from trainer.fileio import atomic_write_text
from trainer.models import DEFAULT_ALIASES, embedded_default_path, is_asymmetric
from trainer.rows import chunks

DEFAULT_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # the embedded default's hub name
CARD_METRICS = (("ndcg@10", "ndcg_at_10", "NDCG@10"), ("mrr@10", "mrr_at_10", "MRR@10"), ("recall@10", "recall_at_10", "Recall@10"))


@dataclass
class RunFacts:
    """What a run's card and W&B run say beyond its metrics."""

    recipe: str  # matryoshka | lora | projection_head, or a recipe of one's own
    config: Any  # the resolved recipe config (a trainer.run.RunConfig)
    data: dict  # data_summary()


def data_summary(cfg, data, eval_data) -> dict:
    """Sources, row and function counts, languages and the held-out split of a run's data.

    Args:
        cfg: the run's ``DataConfig``.
        data: its ``TrainingData``.
        eval_data: the ``BeirData`` it is evaluated on, or None.
    """
    train = data.train
    # Distinct code counted by hash, a chunk at a time: a million rows' code is never one Python list.
    functions, coded = set(), set()  # hashes of the positives; (hash, language) pairs
    for part in chunks(train, ["positive", "language"]):
        functions.update(map(hash, part["positive"]))
        coded.update((hash(p), lang) for p, lang in zip(part["positive"], part["language"]) if lang)
    languages = Counter(lang for _, lang in coded)
    if cfg.eval is not None:
        split = f"evaluated on {cfg.eval} (qrels/{cfg.eval_split}.tsv), a set given apart from the training sources"
    elif eval_data is not None:
        split = (f"{cfg.test_fraction:.0%} of each source's {cfg.group_by}s held out (seed {cfg.seed}): "
                 f"no {cfg.group_by} has functions on both sides")
    else:
        split = "nothing held out (data.test_fraction=0, no data.eval): no evaluation"
    sources = [cfg.source] if isinstance(cfg.source, str) else list(cfg.source)
    return {
        "sources": sources,
        "train_rows": len(train),
        "train_functions": len(functions),
        "query_forms": list(cfg.query_forms),
        "hard_negatives": cfg.hard_negatives,
        "languages": dict(languages.most_common()),
        "eval_queries": len(eval_data.relevant()) if eval_data is not None else 0,
        "eval_documents": len(eval_data.corpus) if eval_data is not None else 0,
        "split": split,
        # per source label: its data.source entry, duplicates and evaluation leaks dropped, rows before/after data.mix
        **{k: data.report[k] for k in ("labels", "mining", "dedup", "decontamination", "mix") if k in data.report},
    }


def base_model(spec: str) -> tuple[str | None, str | None, str]:
    """(hub id or None, licence or None, short name) of the model a run started from.

    The licence is read from the base's own card: the embedded default's, a local folder's, or a
    hub model's in the local cache (nothing is downloaded).
    """
    if spec.lower() in DEFAULT_ALIASES:
        hub_id, readme = DEFAULT_HUB_ID, embedded_default_path() / "README.md"
    elif Path(spec).expanduser().exists():
        hub_id, readme = None, Path(spec).expanduser() / "README.md"
    else:
        hub_id, cached = spec, try_to_load_from_cache(spec, "README.md")
        readme = Path(cached) if isinstance(cached, str) else None
    meta = (metadata_load(readme) if readme is not None and readme.is_file() else None) or {}
    name = (hub_id or str(Path(spec).expanduser().resolve())).rstrip("/").split("/")[-1]
    return hub_id, meta.get("license"), name


def _points(value: float) -> str:
    return f"{100 * value:.2f}"


def results_table(before: dict, after: dict) -> str:
    """Markdown: per dimension, NDCG@10, MRR@10 and Recall@10 of the base and the tuned model, in points."""
    head = "| dim | " + " | ".join(f"{label} base | {label} tuned | Δ" for _, _, label in CARD_METRICS) + " |"
    rule = "|---:|" + "---:|---:|---:|" * len(CARD_METRICS)
    rows = []
    for dim in sorted(after, key=int, reverse=True):
        cells = []
        for key, _, _ in CARD_METRICS:
            b, a = before[dim][key], after[dim][key]
            cells += [_points(b), f"**{_points(a)}**", f"{100 * (a - b):+.2f}"]
        rows.append(f"| {dim} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])


def _eval_results(after: dict, facts: RunFacts) -> list[EvalResult]:
    """The model-index: one result per dimension and metric; the dimension is the dataset's config."""
    data = facts.config.data
    held = [Path(s).name for s in facts.data["sources"] if s != "conala"]  # conala trains only: none held out
    name = Path(data.eval).name if data.eval else "held-out " + "+".join(held)
    kind = re.sub(r"[^\w.-]+", "-", name).strip("-").lower() or "held-out"
    return [
        EvalResult(task_type="information-retrieval", task_name="Code retrieval", dataset_type=kind,
                   dataset_name=f"{name} ({facts.data['eval_queries']} queries)", dataset_config=f"dim_{dim}",
                   dataset_split=data.eval_split, metric_type=metric, metric_value=round(after[dim][key], 6),
                   metric_name=f"{label} at {dim} dims")
        for dim in sorted(after, key=int, reverse=True) for key, metric, label in CARD_METRICS
    ]


def _method(facts: RunFacts, dims: list[str]) -> str:
    cfg, loss = facts.config, facts.config.loss
    objective = (f"InfoNCE (temperature {loss.temperature}{', both directions' if loss.symmetric else ''}) "
                 f"summed over the Matryoshka dimensions {', '.join(dims)}")
    if facts.recipe == "projection_head":
        h = cfg.head
        shape = "a full D×D matrix" if h.rank == 0 else f"identity + a rank-{h.rank} update"
        return (f"A query-only linear head ({shape}) trained for {h.epochs} epochs with {objective} on cached "
                "embeddings of the frozen encoder. Documents are embedded exactly as by the base model.")
    t = cfg.train
    length = f"{t.max_steps} steps" if t.max_steps > 0 else f"{t.epochs} epochs"
    schedule = f"batch {t.batch_size} per process, learning rate {t.lr}, {length}"
    if facts.recipe == "lora":
        lo = cfg.lora
        targets = ", ".join(lo.target_modules) if lo.target_modules else "every linear layer"
        return (f"LoRA (rank {lo.rank}, alpha {lo.alpha}) on {targets} of the frozen encoder, with {objective}; "
                f"{schedule}. The adapters are merged into this folder's weights; `adapter/` holds them alone.")
    merge = getattr(getattr(cfg, "merge", None), "alpha", 1.0)
    merged = f" The tuned weights are then averaged with the base's: base + {merge} × (tuned − base) (WiSE-FT)." if merge != 1.0 else ""
    return f"Every weight of the encoder, with {objective}; {schedule}.{merged}"


def _asymmetry(model) -> str:
    prompt = (model.prompts or {}).get("query")
    notes = [f"`encode_query` puts the prompt {prompt!r} before each query; `encode_document` adds none."] if prompt else []
    if is_asymmetric(model):
        notes.insert(0, "Queries and documents take different routes: `encode_query` applies the trained query head "
                        "after the base encoder, `encode_document` is the base encoder unchanged, so document "
                        "embeddings made with the base model (an existing index) stay valid. Embed queries with "
                        "`encode_query`: plain `encode` takes the document route and misses the head.")
    elif not prompt:
        notes.append("Queries and documents share one encoder: `encode_query` and `encode_document` equal `encode` "
                     "here; use them anyway, so that code written for this model also fits asymmetric ones.")
    return " ".join(notes)


def _versions(recipe: str) -> str:
    names = ["sentence-transformers", "transformers", "torch"] + (["peft"] if recipe == "lora" else [])
    found = [f"{n} {metadata.version(n)}" for n in names]
    return f"codetune {__version__}, " + ", ".join(found) + f", Python {sys.version.split()[0]}"


def _data_section(summary: dict) -> str:
    stdlib = f"the Python {sys.version_info.major}.{sys.version_info.minor} standard library"
    named = {"stdlib": stdlib, "conala": "CoNaLa's Stack Overflow questions"}
    sources = ", ".join(named.get(s, f"`{s}`") for s in summary["sources"])
    languages = ", ".join(f"{lang} {n:,}" for lang, n in summary["languages"].items()) or "not recorded"
    negatives = f", {summary['hard_negatives']} mined hard negatives per query" if summary["hard_negatives"] else ""
    lines = [
        f"- Sources: {sources}.",
        f"- Training: {summary['train_rows']:,} rows over {summary['train_functions']:,} functions "
        f"(query forms: {', '.join(summary['query_forms'])}{negatives}).",
        f"- Functions per language: {languages}.",
        f"- Evaluation: {summary['eval_queries']:,} queries over {summary['eval_documents']:,} documents; {summary['split']}.",
    ]
    leaks = summary.get("decontamination")
    if leaks:
        lines.append(
            f"- Decontamination: {leaks['query'] + leaks['document'] + leaks['near_document']:,} training rows dropped that repeat "
            f"an evaluation query ({leaks['query']:,}) or document ({leaks['document']:,} exact, {leaks['near_document']:,} near)."
        )
    mix = summary.get("mix")
    if mix and mix["mix"] != "proportional":
        n = len(mix["rows_after"])
        lines.append(f"- Mix: each source's rows resampled to a share ∝ rows^{mix['mix']} over {n} source{'s' * (n != 1)}.")
    return "\n".join(lines + _per_source(summary))


def _per_source(summary: dict) -> list[str]:
    """Per source: files and pairs mined (a dash where it was read, not mined), duplicates of another
    source's or its own functions dropped, rows trained on."""
    mined = (summary.get("mining") or {}).get("sources") or {}
    rows = (summary.get("mix") or {}).get("rows_after") or {}
    dedup = summary.get("dedup") or {}
    labels = list(dict.fromkeys([*rows, *mined, *dedup]))  # the sources' order, each once
    if len(labels) < 2 and not dedup:
        return []
    table = ["", "| source | files | pairs mined | duplicates dropped (exact / near) | training rows |", "|---|---:|---:|---:|---:|"]
    for label in labels:
        counts, dup = mined.get(label), dedup.get(label, {})
        files, pairs = (f"{counts['files']:,}", f"{counts['pairs']:,}") if counts else ("–", "–")
        table.append(f"| {label} | {files} | {pairs} | {dup.get('duplicate', 0):,} / {dup.get('near_duplicate', 0):,} "
                     f"| {rows.get(label, 0):,} |")
    return table


def _front_matter(card: ModelCardData) -> str:
    return f"---\n{card.to_yaml()}\n---\n"


def render_card(model, facts: RunFacts, before: dict | None, after: dict | None, where: str) -> str:
    """The card of ``final/``: front matter, then what, data, results, usage, training, versions.

    Args:
        model: the exported SentenceTransformer (its routes and prompts decide the usage notes).
        where: what users pass to ``SentenceTransformer``: the hub repo or the folder.
    """
    hub_id, licence, base_name = base_model(facts.config.model.name)
    dims = sorted(after or {}, key=int, reverse=True) or [str(model.get_embedding_dimension())]
    full, short = dims[0], ("128" if "128" in dims else dims[-1])
    title = f"{base_name} tuned for code retrieval (codetune {facts.recipe})"
    tags = ["sentence-transformers", "sentence-similarity", "feature-extraction", "code-search", "matryoshka",
            "codetune", f"codetune-{facts.recipe.replace('_', '-')}", *facts.data["languages"]]
    results = _eval_results(after, facts) if before and after else None
    meta = ModelCardData(language="en", license=licence, library_name="sentence-transformers", base_model=hub_id,
                         pipeline_tag="sentence-similarity", tags=tags, model_name=title, eval_results=results)
    base_ref = f"[{hub_id}](https://huggingface.co/{hub_id})" if hub_id else f"`{facts.config.model.name}`"
    score = (results_table(before, after) + "\n\nPoints (×100) on the evaluation set under Data; Δ is the change from the base model."
             if before and after else "Not evaluated: the run held nothing out and was given no evaluation set.")
    config_yaml = yaml.safe_dump(to_dict(facts.config), sort_keys=False).strip()
    parts = [
        _front_matter(meta),
        f"# {title}\n",
        f"A sentence-transformers model that embeds natural-language questions and code so that a question "
        f"finds the function that answers it. Tuned from {base_ref} (licence: {licence or 'see the base model'}) "
        f"by codetune's `{facts.recipe}` recipe.\n",
        f"## Results\n\n{score}\n",
        "## Usage\n",
        f"```python\nfrom sentence_transformers import SentenceTransformer\n\n"
        f"model = SentenceTransformer({where!r}, truncate_dim={short})  # the first {short} of {full} dimensions\n"
        f"queries = model.encode_query([\"how do I parse a config file?\"])\n"
        f"documents = model.encode_document([\"def parse_config(path):\\n    ...\"])\n"
        f"print(model.similarity(queries, documents))  # cosine\n```\n",
        f"Trained as a Matryoshka model: the first {', '.join(dims[1:]) or full} dimensions are embeddings on their "
        f"own (`truncate_dim`), at the scores above. {_asymmetry(model)}\n",
        f"## Data\n\n{_data_section(facts.data)}\n",
        f"## Training\n\n{_method(facts, dims)}\n",
        f"<details><summary>Resolved config (<code>codetune train {facts.recipe} --config FILE</code> with this "
        f"as FILE runs it again)</summary>\n\n```yaml\n{config_yaml}\n```\n\n</details>\n",
        f"## Framework versions\n\n{_versions(facts.recipe)}\n",
    ]
    return "\n".join(parts)


def render_adapter_card(facts: RunFacts, before: dict | None, after: dict | None, adapter: str) -> str:
    """The card of LoRA's ``adapter/``: the same results, loaded onto the base model with peft."""
    m = facts.config.model
    hub_id, licence, base_name = base_model(m.name)
    title = f"LoRA adapter: {base_name} tuned for code retrieval (codetune lora)"
    meta = ModelCardData(language="en", license=licence, library_name="peft", base_model=hub_id,
                         pipeline_tag="sentence-similarity", model_name=title,
                         tags=["peft", "lora", "sentence-transformers", "code-search", "codetune", *facts.data["languages"]],
                         eval_results=_eval_results(after, facts) if before and after else None)
    preset = f", preset={m.preset!r}" if m.preset else ""
    parts = [
        _front_matter(meta),
        f"# {title}\n",
        f"The LoRA weights alone; `../final` holds them merged into a plain model, which needs no peft. "
        f"{_method(facts, sorted(after or {}, key=int, reverse=True))}\n",
        f"## Results\n\n{results_table(before, after) if before and after else 'Not evaluated.'}\n",
        "## Usage\n",
        f"```python\nfrom trainer.models import load_model  # codetune: the base model as the recipe built it\n\n"
        f"model = load_model({m.name!r}{preset})\nmodel.load_adapter({adapter!r})\n"
        f"queries = model.encode_query([\"how do I parse a config file?\"])\n```\n",
        f"## Data\n\n{_data_section(facts.data)}\n",
        f"## Framework versions\n\n{_versions('lora')}\n",
    ]
    return "\n".join(parts)


def write_cards(run_dir: Path, model, facts: RunFacts, before: dict | None, after: dict | None) -> list[Path]:
    """Write ``final/README.md`` (and ``adapter/README.md`` when the run saved a LoRA adapter); returns the files."""
    final, adapter = run_dir / "final", run_dir / "adapter"
    repo = getattr(getattr(facts.config, "hub", None), "repo_id", None)
    written = [final / "README.md"]
    atomic_write_text(written[0], render_card(model, facts, before, after, repo or str(final)))
    if (adapter / "adapter_config.json").is_file():
        written.append(adapter / "README.md")
        atomic_write_text(written[1], render_adapter_card(facts, before, after, str(adapter)))
    return written
