"""A run's model card: valid hub metadata that matches the run, instructions that work as written,
and the exact folder a push would upload."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard
from test_recipes import FIXTURE, pairs  # noqa: F401 -- the fixture is used by name
from test_tracking import of_kind, wandb_records

from trainer.checkpoint import export_model
from trainer.config import load_config
from trainer.errors import CodetuneError
from trainer.model_card import RunFacts, base_model, data_summary, write_cards

ROOT = Path(__file__).resolve().parents[1]
BEFORE = {"32": {"ndcg@10": 0.50, "mrr@10": 0.40, "recall@10": 0.70}, "16": {"ndcg@10": 0.40, "mrr@10": 0.30, "recall@10": 0.60}}
AFTER = {"32": {"ndcg@10": 0.60, "mrr@10": 0.45, "recall@10": 0.80}, "16": {"ndcg@10": 0.55, "mrr@10": 0.42, "recall@10": 0.75}}


def python_block(text: str, section: str) -> str:
    """The first ```python block after the heading ``## section``."""
    return re.search(rf"## {section}\n.*?```python\n(.*?)```", text, re.S).group(1)


def facts_for(cfg, recipe="matryoshka"):
    import datasets

    from trainer.data import TrainingData
    from trainer.data.beir import load_beir

    rows = [{"query": f"q{i}", "positive": f"def f{i % 3}(): pass", "language": "python" if i % 3 else "go"} for i in range(6)]
    data = TrainingData(datasets.Dataset.from_list(rows), FIXTURE)
    return RunFacts(recipe, cfg, data_summary(cfg.data, data, load_beir(FIXTURE)))


@pytest.fixture
def tiny_run(tiny_bert, tmp_path):
    """A run folder whose final/ holds the tiny BERT (BGE preset), with the config that names it."""
    from trainer.models import load_model
    from trainer.session import FineTuneConfig

    model = load_model(str(tiny_bert), preset="bge")
    run_dir = tmp_path / "run"
    export_model(model, run_dir / "final")
    cfg = load_config(FineTuneConfig, [f"model.name={tiny_bert}", "model.preset=bge", "loss.matryoshka_dims=[32,16]",
                                       f"data.eval={FIXTURE}", f"output_dir={run_dir}"])
    return run_dir, model, cfg


def test_the_card_is_valid_metadata_that_matches_the_run_and_its_usage_runs(tiny_run):
    run_dir, model, cfg = tiny_run
    (path,) = write_cards(run_dir, model, facts_for(cfg), BEFORE, AFTER)
    card = ModelCard.load(path)  # parses the front matter and its model-index, as the hub does
    meta = card.data
    assert meta.library_name == "sentence-transformers" and meta.pipeline_tag == "sentence-similarity"
    assert {"codetune", "codetune-matryoshka", "python", "go"} <= set(meta.tags)
    assert meta.base_model is None and meta.license is None  # a local folder: no hub id, no card to read a licence from
    scores = {(r.dataset_config, r.metric_type): r.metric_value for r in meta.eval_results}
    assert scores == {(f"dim_{d}", m): AFTER[d][k] for d in AFTER
                      for k, m in (("ndcg@10", "ndcg_at_10"), ("mrr@10", "mrr_at_10"), ("recall@10", "recall_at_10"))}
    text = card.text
    assert "| 32 | 50.00 | **60.00** | +10.00 | 40.00 | **45.00** | +5.00 | 70.00 | **80.00** | +10.00 |" in text
    assert "6 rows over 3 functions" in text and "python 2, go 1" in text and "128 queries over 327 documents" in text
    assert "Represent this sentence" in text  # the BGE preset's query prompt is named
    assert "codetune train matryoshka --config FILE" in text and "temperature: 0.05" in text  # the resolved config

    scope: dict = {}
    exec(python_block(text, "Usage"), scope)  # the card's own instructions, as a user would paste them
    assert scope["queries"].shape == (1, 16) and scope["documents"].shape == (1, 16)  # truncate_dim=16, the smallest dim
    full = model.encode_query(["how do I parse a config file?"])
    assert np.allclose(scope["queries"][0], full[0, :16], atol=1e-5)


def test_the_default_model_is_named_by_its_hub_id_with_its_licence():
    assert base_model("default") == ("sentence-transformers/all-MiniLM-L6-v2", "apache-2.0", "all-MiniLM-L6-v2")


def test_the_head_card_says_queries_and_documents_take_different_routes(tiny_run):
    from trainer.launch import load_recipe, recipe_path
    from trainer.models.projection import QueryHead, with_query_head

    run_dir, model, cfg = tiny_run
    head_cfg = load_recipe(recipe_path("projection_head")).config([f"model.name={cfg.model.name}", f"data.eval={FIXTURE}", "head.rank=4"])
    head_model = with_query_head(model, QueryHead(32, rank=4))
    export_model(head_model, run_dir / "final")
    (path,) = write_cards(run_dir, head_model, facts_for(head_cfg, "projection_head"), BEFORE, AFTER)
    text = path.read_text()
    assert "`encode_document` is the base encoder unchanged" in text and "misses the head" in text
    assert "identity + a rank-4 update" in text and "Represent this sentence" in text


@pytest.fixture
def hub(monkeypatch):
    """HfApi that records what it would send instead of sending it, with a token in the environment."""
    import huggingface_hub

    calls = []
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))

    def upload_folder(self, repo_id, folder_path, **kw):
        if repo_id == "me/unreachable":
            raise ConnectionError("no route to host")
        files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        calls.append(("upload", repo_id, folder_path, files, Path(folder_path, "README.md").read_text()))

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


def _finish(run_dir, model, cfg):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from trainer import run

    try:
        return run.finish(model, run_dir, BEFORE, AFTER, {"model": cfg.model.name}, Accelerator(cpu=True), "t", facts_for(cfg))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_hub_repo_id_pushes_exactly_final_with_its_card(tiny_run, hub, capsys):
    from sentence_transformers import SentenceTransformer

    from trainer.session import FineTuneConfig

    run_dir, model, cfg = tiny_run
    cfg = load_config(FineTuneConfig, [f"model.name={cfg.model.name}", "model.preset=bge", "loss.matryoshka_dims=[32,16]",
                                       f"data.eval={FIXTURE}", "hub.repo_id=me/tuned"])
    final = _finish(run_dir, model, cfg)
    (create, upload) = hub
    assert create == ("create", "me/tuned", {"private": True, "repo_type": "model", "exist_ok": True})
    _, repo, folder, files, readme = upload
    assert (repo, folder) == ("me/tuned", str(final))
    assert {"README.md", "modules.json", "config.json", "model.safetensors"} <= set(files)
    assert not [f for f in files if f.startswith(".") or "checkpoint" in f]
    assert "SentenceTransformer('me/tuned', truncate_dim=16)" in readme  # the card names where it is going
    assert SentenceTransformer(folder).encode_query(["x"]).shape == (1, 32)  # what is uploaded loads

    cfg.hub.repo_id = "me/unreachable"
    assert _finish(run_dir, model, cfg) == final  # the run still ends with its model saved
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "hf upload me/unreachable" in warning[0] and "no route to host" in warning[0]


def test_hub_settings_fail_when_loaded_not_after_training(monkeypatch, tmp_path):
    import huggingface_hub

    from trainer.hub import HubConfig, check_upload

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(CodetuneError, match="hub.repo_id: no Hugging Face token; set HF_TOKEN"):
        HubConfig(repo_id="me/tuned")
    with pytest.raises(CodetuneError, match="hub.repo_id: 'tuned' is not namespace/name"):
        HubConfig(repo_id="tuned")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CodetuneError, match="HF_HUB_OFFLINE is set"):
        HubConfig(repo_id="me/tuned")

    from trainer.models import embedded_default_path

    (tmp_path / "modules.json").write_text("[]")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "README.md").write_text((embedded_default_path() / "README.md").read_text())
    with pytest.raises(CodetuneError, match="README.md is not this run's model card"):
        check_upload(tmp_path)  # the base model's card, as sentence-transformers' save leaves it


@pytest.mark.slow
def test_a_lora_run_through_codetune_train_has_true_cards_and_a_dashboard(tiny_bert, pairs, tmp_path):  # noqa: F811
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "trainer.cli", "train", "--cpu", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "lora", f"model.name={tiny_bert}", "model.preset=bge",
           f"output_dir={out}", f"data.source={pairs}", f"data.eval={FIXTURE}", "loss.matryoshka_dims=[32,16]",
           "train.batch_size=8", "train.max_steps=4", "train.lr=1e-3", "lora.rank=2", "tracking.wandb=offline"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "eval.json").read_text())

    final = ModelCard.load(out / "final" / "README.md")
    assert {(r.dataset_config, r.metric_type): r.metric_value for r in final.data.eval_results if r.metric_type == "ndcg_at_10"} \
        == {(f"dim_{d}", "ndcg_at_10"): round(m["ndcg@10"], 6) for d, m in result["after"]["metrics"].items()}
    assert "LoRA (rank 2, alpha 16)" in final.text and "codetune-lora" in final.data.tags

    adapter = ModelCard.load(out / "adapter" / "README.md")
    assert adapter.data.library_name == "peft" and "lora" in adapter.data.tags
    scope: dict = {}
    exec(python_block(adapter.text, "Usage"), scope)  # base model + adapter, as the card says
    merged = SentenceTransformer(str(out / "final")).encode_query(["how do I parse a config file?"])
    assert np.allclose(scope["queries"], merged, atol=1e-5)

    records = wandb_records(out)
    (wandb_run,) = of_kind(records, "run")
    assert wandb_run.run_group == "lora" and f"model:{tiny_bert.name}" in wandb_run.tags
    (model_artifact,) = [a for a in of_kind(records, "artifact") if a.type == "model"]
    assert {e.path for e in model_artifact.manifest.contents} >= {"README.md", "modules.json", "model.safetensors"}
    data = [json.loads(u.value_json) for c in of_kind(records, "config") for u in c.update if u.key == "data_summary"]
    assert data and data[0]["eval_queries"] == 128
