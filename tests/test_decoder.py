"""Decoder (LLM) embedders on a tiny random Qwen3: last-token pooling by hand, padding on either
side, bf16 frozen weights, gradient checkpointing, LoRA merge, 2 processes, evaluator and search."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_qwen3
from sentence_transformers import SentenceTransformer
from test_recipes import run_recipe
from test_training import assert_same_weights, launch, losses, weights

from trainer.checkpoint import export_model
from trainer.errors import CodetuneError
from trainer.models import ModelConfig, load_model
from trainer.models.lora import LoraSettings, apply_lora, merge_lora
from trainer.models.memory import enable_gradient_checkpointing, prepare_for_training
from trainer.models.presets import PRESETS, Preset, end_with_eos, preset_for_name

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "beir_code"
TEXTS = ["def add(a, b):\n    return a + b", "parse a configuration file and return its options as a dict", "sort"]


def fp32(path, preset="decoder"):
    """The decoder in fp32, whatever this CPU's bf16 support: equalities below are exact to 1e-5."""
    return load_model(str(path), preset=preset).float()


@pytest.mark.parametrize(
    "name,preset",
    [
        ("Qwen/Qwen3-Embedding-0.6B", "qwen3-embedding"),
        ("Qwen/Qwen3-Embedding-4B", "qwen3-embedding"),
        ("Qwen/Qwen3-Embedding-8B", "qwen3-embedding"),
        ("Alibaba-NLP/gte-Qwen2-1.5B-instruct", "gte-qwen2"),
        ("Alibaba-NLP/gte-Qwen2-7B-instruct", "gte-qwen2"),
        ("BAAI/bge-base-en-v1.5", "bge"),
        ("microsoft/codebert-base", "codebert"),
        ("Qwen/Qwen3-0.6B", None),  # a chat model: say preset=decoder to embed with it
    ],
)
def test_real_names_select_their_preset(name, preset):
    assert preset_for_name(name) == preset


def test_a_raw_folder_named_like_qwen3_embedding_is_assembled_from_its_preset(tiny_qwen3, tmp_path):
    folder = shutil.copytree(tiny_qwen3, tmp_path / "Qwen3-Embedding-0.6B")
    model = load_model(str(folder))
    assert model[1].pooling_mode == "lasttoken" and type(model[2]).__name__ == "Normalize"
    assert model.prompts == {"query": PRESETS["qwen3-embedding"].query_prompt, "document": ""}
    assert model.prompts["query"].startswith("Instruct: ") and model.prompts["query"].endswith("\nQuery:")
    eos = model.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert model.tokenizer("x")["input_ids"][-1] == eos and model.tokenizer.padding_side == "left"


def hand_embedding(model, text: str, prompt: str) -> torch.Tensor:
    """Hidden state of the appended EOS token (the generic preset's is the tokenizer's ``eos_token``),
    the text run alone (no padding), L2-normalised: (D,)."""
    tok = model.tokenizer
    ids = tok(prompt + text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        hidden = model[0].model(input_ids=torch.tensor([ids])).last_hidden_state  # (1, T, D)
    return F.normalize(hidden[0, -1], dim=-1)


@pytest.mark.parametrize("side", ["left", "right"])
def test_last_token_pooling_equals_the_hand_computation_whichever_side_pads(tiny_qwen3, side):
    model = fp32(tiny_qwen3)
    model.tokenizer.padding_side = side
    features = model.tokenize(TEXTS)
    assert not features["attention_mask"].all()  # the batch is padded
    assert features["attention_mask"][:, -1 if side == "left" else 0].all()
    prompt = model.prompts["query"]
    queries = torch.as_tensor(model.encode_query(TEXTS))  # (3, 32)
    documents = torch.as_tensor(model.encode_document(TEXTS))
    for i, text in enumerate(TEXTS):
        torch.testing.assert_close(queries[i], hand_embedding(model, text, prompt), atol=1e-5, rtol=0)
        torch.testing.assert_close(documents[i], hand_embedding(model, text, ""), atol=1e-5, rtol=0)
    assert (queries - documents).abs().max() > 1e-2  # the instruction is on queries only, and it matters


def test_truncation_keeps_the_end_of_text_token_last(tiny_qwen3):
    model = load_model(str(tiny_qwen3), preset="decoder", max_seq_length=6)
    ids = model.tokenize([TEXTS[1]])["input_ids"][0]
    assert len(ids) == 6 and ids[-1] == model.tokenizer.eos_token_id


def test_a_tokenizer_that_already_appends_it_gets_no_second_end_of_text_token(tiny_qwen3):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_qwen3)
    tok.unk_token = "<|endoftext|>"  # as in Qwen's own tokenizers: the token to append is also the unknown one
    plain = tok("a b")["input_ids"]
    end_with_eos(tok, PRESETS["qwen3-embedding"])
    once = tok("a b")["input_ids"]
    end_with_eos(tok, PRESETS["qwen3-embedding"])  # as on a hub tokenizer that appends it already
    assert once == plain + [tok.convert_tokens_to_ids("<|endoftext|>")] and tok("a b")["input_ids"] == once
    generic = AutoTokenizer.from_pretrained(tiny_qwen3)
    end_with_eos(generic, PRESETS["decoder"])  # the generic preset appends the tokenizer's own eos_token
    assert generic("a b")["input_ids"] == plain + [generic.eos_token_id]
    with pytest.raises(CodetuneError, match="model.preset: the tokenizer has no end-of-text token '<eos>'"):
        end_with_eos(AutoTokenizer.from_pretrained(tiny_qwen3), Preset("lasttoken", decoder=True, eos_token="<eos>"))


@pytest.mark.parametrize("bf16", [True, False])
def test_decoder_weights_load_in_bf16_where_supported_and_train_in_fp32(tiny_qwen3, monkeypatch, bf16):
    monkeypatch.setattr("trainer.hardware.bf16_supported", lambda: bf16)
    frozen = torch.bfloat16 if bf16 else torch.float32
    model = load_model(str(tiny_qwen3), preset="decoder")
    assert {p.dtype for p in model.parameters()} == {frozen}
    prepare_for_training(model, ModelConfig())  # full fine-tuning trains every weight
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    lora = load_model(str(tiny_qwen3), preset="decoder")
    apply_lora(lora, LoraSettings(rank=2))
    prepare_for_training(lora, ModelConfig())
    assert {p.dtype for p in lora.parameters() if p.requires_grad} == {torch.float32}
    assert {p.dtype for p in lora.parameters() if not p.requires_grad} == {frozen}
    assert torch.isfinite(torch.as_tensor(lora.encode_query(TEXTS))).all()


def saved_bytes(fn) -> int:
    """Bytes of the distinct tensors autograd saves for backward while ``fn`` runs."""
    seen = {}

    def pack(t):
        seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients_dropout_included_for_less_saved_memory(tmp_path, lora):
    folder = make_tiny_qwen3(tmp_path / "dropout", dropout=0.3)

    def gradients(checkpointing: bool, seed: int = 1):
        model = fp32(folder)
        if lora:
            torch.manual_seed(0)  # the adapters' random initialisation
            apply_lora(model, LoraSettings(rank=4, dropout=0.3))
        if checkpointing:
            enable_gradient_checkpointing(model)
        model.train()
        features = model.tokenize([t * 3 for t in TEXTS])
        torch.manual_seed(seed)
        emb, saved = saved_bytes(lambda: model(dict(features))["sentence_embedding"])  # (3, 32)
        (emb @ torch.linspace(-1, 1, 32)).sum().backward()
        return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}, saved

    plain, plain_saved = gradients(False)
    ckpt, ckpt_saved = gradients(True)
    assert plain.keys() == ckpt.keys() and all(g is not None for g in plain.values())
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)
    assert ckpt_saved < 0.5 * plain_saved, (ckpt_saved, plain_saved)
    other, _ = gradients(False, seed=2)  # another dropout draw changes the gradients: the equality above is not vacuous
    assert any((other[n] - plain[n]).abs().max() > 1e-4 for n in plain)


def test_lora_targets_every_projection_and_the_merged_export_encodes_the_same(tiny_qwen3, tmp_path):
    model = fp32(tiny_qwen3)
    base = torch.as_tensor(model.encode_query(TEXTS))
    apply_lora(model, LoraSettings(rank=4))
    adapted = {n.split(".")[-2] for n, _ in model.named_modules() if n.endswith(".lora_A")}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # as after training: B starts at zero, which would make the merge trivial
    queries, documents = (torch.as_tensor(f(TEXTS)) for f in (model.encode_query, model.encode_document))
    assert (queries - base).abs().max() > 1e-2
    export_model(merge_lora(model), tmp_path / "final")
    merged = SentenceTransformer(str(tmp_path / "final"))
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(torch.as_tensor(merged.encode_query(TEXTS)), queries, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.as_tensor(merged.encode_document(TEXTS)), documents, atol=1e-5, rtol=0)
    assert merged.tokenizer.padding_side == "left" and merged.prompts["query"] == PRESETS["decoder"].query_prompt


@pytest.fixture(scope="module")
def decoder_st(tiny_qwen3, tmp_path_factory) -> Path:
    """The tiny decoder saved as an fp32 sentence-transformers folder (pooling, prompts and EOS inside)."""
    folder = tmp_path_factory.mktemp("decoder-st") / "model"
    export_model(fp32(tiny_qwen3), folder)
    return folder


def test_the_evaluator_and_search_work_on_it_unchanged(decoder_st, tmp_path):
    from test_evaluator import reference_metrics
    from test_search import CODE_TREE, QUERIES

    from trainer.data.beir import load_beir
    from trainer.evaluator import evaluate
    from trainer.retrieval import encode, normalize_truncate, top_k
    from trainer.search import build_index, document_text, load_index, search

    model = load_model(str(decoder_st))
    data = load_beir(FIXTURE)
    ours = evaluate(model, data, [32, 16], show_progress=False)
    for dim in (32, 16):
        ref = reference_metrics(model, data, dim)
        assert ours[str(dim)]["ndcg@10"] == pytest.approx(ref["ndcg@10"], abs=1e-4)
    build_index([CODE_TREE / "pkg"], tmp_path / "index", str(decoder_st), model=model, show_progress=False)
    idx = load_index(tmp_path / "index")
    assert idx.dim == 32
    hits = search(idx, QUERIES, model, k=3, mode="dense")
    compute = idx.manifest["compute"]  # bf16 where the hardware has it: queries are encoded as documents were
    docs = normalize_truncate(encode(model, [document_text(s) for s in idx.snippets], "document", compute=compute), 32)
    scores, ids = top_k(normalize_truncate(encode(model, QUERIES, "query", compute=compute), 32), docs, k=3)
    for row, srow, irow in zip(hits, scores, ids):
        torch.testing.assert_close(torch.tensor([h.score for h in row]), srow, atol=1e-5, rtol=0)
        assert [h.snippet.id for h in row] == [idx.snippets[i].id for i in irow.tolist()]


@pytest.mark.distributed
@pytest.mark.slow
def test_two_processes_equal_one_with_double_batch(decoder_st, tmp_path):
    steps = ["preset=none", "train.max_steps=2", "train.hard_negatives=1", "train.checkpoint_every=0"]
    launch(decoder_st, tmp_path / "one", "train.batch_size=8", *steps, processes=1)
    launch(decoder_st, tmp_path / "two", "train.batch_size=4", "train.grad_cache_chunk=3", *steps, processes=2)
    assert losses(tmp_path / "one") == pytest.approx(losses(tmp_path / "two"), rel=1e-5)
    assert_same_weights(weights(tmp_path / "one"), weights(tmp_path / "two"))
    start = SentenceTransformer(str(decoder_st)).state_dict()
    moved = [k for k, v in weights(tmp_path / "one").items() if (v - start[k]).abs().max() > 1e-3]
    assert len(moved) > 0.8 * len(start)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    from train_worker import fixture_rows

    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in fixture_rows()))
    return path


@pytest.mark.distributed
@pytest.mark.slow
def test_lora_recipe_with_gradient_checkpointing_and_grad_cache_equals_it_without(tmp_path, pairs):
    """Two processes, LoRA, GradCache chunks of 3, dropout on: checkpointing changes memory, not one number."""
    model = make_tiny_qwen3(tmp_path / "dropout", dropout=0.2)
    common = ["tracking.wandb=disabled", "train.grad_cache_chunk=3", "train.hard_negatives=0", "train.max_steps=3",
              "train.checkpoint_every=0", "lora.rank=4"]
    outs = {}
    for ckpt in (False, True):
        outs[ckpt] = tmp_path / f"ckpt-{ckpt}"
        run_recipe("lora.py", model, "decoder", outs[ckpt], pairs, *common, f"model.gradient_checkpointing={ckpt}", processes=2)
    logs = [[json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()] for out in outs.values()]
    curves = [[r["loss"] for r in log if "loss" in r] for log in logs]
    assert len(curves[0]) == 3 and curves[0] == pytest.approx(curves[1], rel=1e-6)
    a, b = (SentenceTransformer(str(out / "final")) for out in outs.values())
    torch.testing.assert_close(torch.as_tensor(a.encode_query(TEXTS)), torch.as_tensor(b.encode_query(TEXTS)), atol=1e-6, rtol=0)
    assert a[1].pooling_mode == "lasttoken"
    after = json.loads((outs[True] / "eval.json").read_text())["after"]["metrics"]
    assert set(after) == {"32", "16"}


def test_shipped_qwen3_config_loads_and_names_its_preset():
    sys.path.insert(0, str(ROOT / "recipes"))
    from lora import LoraRecipeConfig

    from trainer.config import load_config

    cfg = load_config(LoraRecipeConfig, ["--config", str(ROOT / "recipes" / "configs" / "qwen3-embedding.yaml")])
    assert cfg.model.preset is None and preset_for_name(cfg.model.name) == "qwen3-embedding"  # a new name picks its own
    assert cfg.model.gradient_checkpointing and not cfg.model.trust_remote_code
    assert cfg.loss.matryoshka_dims[0] == 1024  # Qwen3-Embedding-0.6B's width
