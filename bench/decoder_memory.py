"""Memory of a decoder embedder's training step, with and without gradient checkpointing.

    python bench/decoder_memory.py                  # CPU: one step per setting, each in its own process
    python bench/decoder_memory.py --widths         # + activation bytes per token and layer at real model widths

Part 1 builds one random decoder (Qwen3 architecture, width 512, 4 layers: small enough for a
laptop, big enough that activations dominate) and an encoder of the same width and depth (BERT),
and runs forward + backward of one contrastive batch (8 queries of 32 tokens, 8 documents of 256)
through codetune's own path: ``load_model`` with a preset, ``prepare_for_training``, the loop's
``PairEncoder`` and ``MatryoshkaInfoNCE``. Each setting runs in a fresh process, because peak
resident memory only grows. It prints the peak RSS above the loaded model (gradient buffers
included in the baseline), the bytes autograd saved for backward (counted exactly by a
saved-tensors hook), and the CPU seconds of a step (all threads; robust to a busy machine).

Part 2 (``--widths``) counts, the same way, the activation bytes per token of one transformer
layer at the real widths of Qwen3-Embedding-0.6B, gte-Qwen2-1.5B and Qwen3-Embedding-8B (a
2-layer model minus a 1-layer one, bf16 weights, LoRA on every projection, bf16 autocast), with and
without checkpointing, and multiplies them by layers and tokens in flight next to the weights and
optimizer state computed from the same widths: the GPU table in docs/decoder.md. The CUDA context and the
transient gradient buffers of the layer being back-propagated come on top.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WIDTH, LAYERS, HEADS = 512, 4, 8
QUERIES, QUERY_TOKENS, DOCS, DOC_TOKENS = 8, 32, 8, 256
VOCAB = 2048

# Real widths (config.json of each model): architecture, hidden, q heads, kv heads, head dim, MLP, layers, vocabulary.
REAL = {
    "Qwen3-Embedding-0.6B": dict(arch="qwen3", hidden=1024, heads=16, kv_heads=8, head_dim=128, mlp=3072, layers=28, vocab=151669),
    "gte-Qwen2-1.5B-instruct": dict(arch="qwen2", hidden=1536, heads=12, kv_heads=2, head_dim=128, mlp=8960, layers=28, vocab=151646),
    "Qwen3-Embedding-8B": dict(arch="qwen3", hidden=4096, heads=32, kv_heads=8, head_dim=128, mlp=12288, layers=36, vocab=151665),
}
IN_FLIGHT = 16 * 512  # tokens in one forward: recipes/configs/qwen3-embedding.yaml's GradCache chunk of 16 documents of 512
LORA_RANK = 16


def parameters(w: dict) -> tuple[float, float]:
    """(all parameters, LoRA parameters at LORA_RANK on the seven projections) from a model's widths."""
    h, q, kv, i = w["hidden"], w["heads"] * w["head_dim"], w["kv_heads"] * w["head_dim"], w["mlp"]
    layer = 2 * h * q + 2 * h * kv + 3 * h * i  # q, o; k, v; gate, up, down (norms and biases are <0.1%)
    lora = LORA_RANK * (2 * (h + q) + 2 * (h + kv) + 3 * (h + i))
    return w["layers"] * layer + w["vocab"] * h, w["layers"] * lora


def word_tokenizer(folder: Path, pad: str, eos: str) -> None:
    """A word-level tokenizer over ``w0 .. w{VOCAB}``: every word is exactly one token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([pad, eos, "[UNK]"] + [f"w{i}" for i in range(VOCAB)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad, eos_token=eos, unk_token="[UNK]", model_max_length=512)
    fast.save_pretrained(folder)


def build(folder: Path, arch: str) -> None:
    """A raw random ``decoder`` (Qwen3) or ``encoder`` (BERT) of the benchmark's width and depth."""
    import torch
    from transformers import BertConfig, BertModel, Qwen3Config, Qwen3Model

    torch.manual_seed(0)
    if arch == "decoder":
        word_tokenizer(folder, "<|endoftext|>", "<|im_end|>")
        config = Qwen3Config(
            vocab_size=VOCAB + 3, hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
            num_key_value_heads=HEADS // 2, head_dim=WIDTH // HEADS, intermediate_size=3 * WIDTH, max_position_embeddings=512,
        )
        Qwen3Model(config).save_pretrained(folder)
    else:
        word_tokenizer(folder, "[PAD]", "[SEP]")
        config = BertConfig(
            vocab_size=VOCAB + 3, hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
            intermediate_size=4 * WIDTH, max_position_embeddings=520,
        )
        BertModel(config).save_pretrained(folder)


def saved_bytes_hook(params: set[int]):
    """A saved-tensors hook pair and the dict it fills: storage -> bytes, model weights excluded."""
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    return (pack, lambda t: t), seen


def step(folder: Path, preset: str, checkpointing: bool) -> dict:
    """Forward + backward of one contrastive batch in this process: memory of the first, CPU time of the second."""
    import psutil
    import torch

    from trainer.losses import MatryoshkaInfoNCE
    from trainer.models import ModelConfig, load_model
    from trainer.models.forward import PairEncoder, tokenize
    from trainer.models.memory import prepare_for_training

    torch.set_num_threads(2)
    model = load_model(str(folder), preset=preset, max_seq_length=512).float()
    prepare_for_training(model, ModelConfig(gradient_checkpointing=checkpointing))
    model.train()
    model.prompts = {"query": "", "document": ""}  # both models see exactly the same number of tokens
    encoder = PairEncoder(model)
    loss_fn = MatryoshkaInfoNCE([WIDTH])
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # gradient buffers exist before the measured step, as in any step after the first
    g = torch.Generator().manual_seed(0)

    def texts(n: int, length: int) -> list[str]:
        # the decoder preset appends one end-of-text token; this tokenizer adds nothing else
        words = torch.randint(0, VOCAB, (n, length - (preset == "decoder")), generator=g)
        return [" ".join(f"w{int(i)}" for i in row) for row in words]

    q = tokenize(model, texts(QUERIES, QUERY_TOKENS), "query", torch.device("cpu"))
    d = tokenize(model, texts(DOCS, DOC_TOKENS), "document", torch.device("cpu"))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    out = {"tokens": int(q["attention_mask"].sum() + d["attention_mask"].sum())}
    out["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    for i in range(2):
        rss_before = psutil.Process().memory_info().rss
        t0 = time.process_time()
        hooks, seen = saved_bytes_hook(params)
        with torch.autograd.graph.saved_tensors_hooks(*hooks):
            qe, de = encoder(q, d)
        loss, _ = loss_fn(qe, de)
        loss.backward()
        if i == 0:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
            out["peak_above_model_mb"] = (peak - rss_before) / 2**20
            out["saved_mb"] = sum(seen.values()) / 2**20
    out["cpu_s"] = time.process_time() - t0  # CPU time of all threads: what the step costs, on a busy machine too
    return out


def per_layer_bytes(name: str, checkpointing: bool, tokens: int = 32) -> float:
    """Activation bytes per token of one layer at ``name``'s real width (LoRA, bf16 weights and autocast)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModel

    from trainer.models.lora import TARGETS
    from trainer.models.memory import checkpoint_layers

    w = REAL[name]
    counts = []
    for layers in (1, 2):
        config = AutoConfig.for_model(
            w["arch"], vocab_size=64, hidden_size=w["hidden"], num_hidden_layers=layers, num_attention_heads=w["heads"],
            num_key_value_heads=w["kv_heads"], head_dim=w["head_dim"], intermediate_size=w["mlp"],
            max_position_embeddings=tokens, use_cache=False,
        )
        model = AutoModel.from_config(config, dtype=torch.bfloat16)
        lora = LoraConfig(r=LORA_RANK, lora_alpha=2 * LORA_RANK, lora_dropout=0.05, target_modules=TARGETS[w["arch"]])
        model = get_peft_model(model, lora)
        if checkpointing:
            checkpoint_layers(model.get_base_model())
        model.train()
        hooks, seen = saved_bytes_hook({p.untyped_storage().data_ptr() for p in model.parameters()})
        ids = torch.randint(0, 64, (1, tokens))
        with torch.autograd.graph.saved_tensors_hooks(*hooks), torch.autocast("cpu", dtype=torch.bfloat16):
            model(input_ids=ids).last_hidden_state[:, -1].float().sum().backward()
        counts.append(sum(seen.values()))
        del model
    return (counts[1] - counts[0]) / tokens


def main() -> None:  # noqa: D103
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", action="store_true", help="also count activation bytes at real model widths")
    parser.add_argument("--worker", nargs=3, metavar=("FOLDER", "PRESET", "CHECKPOINTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        folder, preset, ckpt = args.worker
        print(json.dumps(step(Path(folder), preset, ckpt == "1")))
        return

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch, preset in (("decoder", "decoder"), ("encoder", "codebert")):
            folder = Path(tmp) / arch
            build(folder, arch)
            for ckpt in (False, True):
                cmd = [sys.executable, __file__, "--worker", str(folder), preset, "1" if ckpt else "0"]
                # A fixed mmap threshold makes glibc hand freed blocks back, so RSS follows live memory.
                env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
                proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
                results[(arch, ckpt)] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"forward + backward of {QUERIES} queries x {QUERY_TOKENS} + {DOCS} documents x {DOC_TOKENS} tokens, "
          f"width {WIDTH}, {LAYERS} layers, full fine-tuning, fp32 on CPU")
    print(f"{'model':<34}{'params':>8}{'saved for backward':>20}{'peak RSS above model':>22}{'CPU s/step':>12}")
    for (arch, ckpt), r in results.items():
        label = f"{arch} ({'Qwen3' if arch == 'decoder' else 'BERT'}){' + checkpointing' if ckpt else ''}"
        print(f"{label:<34}{r['params_m']:>7.1f}M{r['saved_mb']:>17.0f} MB{r['peak_above_model_mb']:>19.0f} MB{r['cpu_s']:>12.2f}")
    off, on, enc = results[("decoder", False)], results[("decoder", True)], results[("encoder", False)]
    print(f"checkpointing: saved activations {off['saved_mb'] / on['saved_mb']:.1f}x smaller, peak RSS "
          f"{off['peak_above_model_mb'] / on['peak_above_model_mb']:.1f}x smaller, step {on['cpu_s'] / off['cpu_s']:.2f}x the CPU time")
    print(f"decoder vs encoder of the same width, depth and parameters per layer: step {off['cpu_s'] / enc['cpu_s']:.2f}x "
          f"the CPU time, saved activations {off['saved_mb'] / enc['saved_mb']:.2f}x")

    if args.widths:
        gb = 1e9
        print(f"\nLoRA r={LORA_RANK} on every projection, bf16 weights and autocast; activations of {IN_FLIGHT:,} tokens in flight")
        print(f"{'model':<26}{'params':>8}{'weights':>9}{'LoRA+Adam':>11}{'act. B/token/layer':>20}{'activations':>13}"
              f"{'total':>8}{'activations':>13}{'total':>8}")
        print(f"{'':<26}{'':>8}{'':>9}{'':>11}{'(off / on)':>20}{'(no ckpt)':>13}{'':>8}{'(ckpt)':>13}{'':>8}")
        for name, w in REAL.items():
            off_b, on_b = per_layer_bytes(name, False), per_layer_bytes(name, True)
            total, lora = parameters(w)
            weights, state = 2 * total, 16 * lora  # bf16 weights; fp32 adapter, gradient and two Adam moments
            act_off = IN_FLIGHT * w["layers"] * off_b
            act_on = IN_FLIGHT * (w["layers"] * on_b + off_b)  # layer inputs, plus one layer recomputed at a time
            print(f"{name:<26}{total / 1e9:>7.2f}B{weights / gb:>6.1f} GB{state / gb:>8.2f} GB{off_b:>11,.0f} / {on_b:,.0f}"
                  f"{act_off / gb:>10.1f} GB{(weights + state + act_off) / gb:>5.0f} GB{act_on / gb:>10.1f} GB"
                  f"{(weights + state + act_on) / gb:>5.1f} GB")


if __name__ == "__main__":
    main()
