"""Encoding through OpenVINO, fp32 or int8: sentence-transformers' backend, exported once.

Training is torch; indexing a tree and scoring sets only encode, and there an exported graph runs
faster on CPUs. sentence-transformers loads a model folder with ``backend="openvino"`` (Optimum
Intel exports the transformer; pooling, the rotation ``Dense`` and ``Normalize`` stay torch
modules), and Optimum Intel's quantizer makes it int8 with activation ranges calibrated on code.

The ONNX backend is left out: sentence-transformers 6 (which codetune needs) requires transformers
5, and optimum-onnx 0.1.0, the newest, requires transformers below 4.58, so no environment holds both.

An export takes seconds to a minute, so it is made once per model and compute and kept under
``cache_root()/encoders``. The key is the model's files (path, size, mtime), the compute and the
exporting libraries' versions; the loaded model's fingerprint hashes the torch weights it came from
with the compute, so an index built with it checks its queries' model as a torch-built index does.

Encoding many batches runs the exported transformer in OpenVINO's throughput mode
(:func:`encode_async`): a stream per core, each running a batch, while the next batch is tokenized.

The backend needs Optimum Intel (``pip install 'codetune[openvino]'``), which pins transformers below
5.6 (codetune's own tests run on a newer one); asked for without it, this is one line naming the extra.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import shutil
import sysconfig
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Router, Transformer

from trainer.embedding_cache import model_fingerprint
from trainer.errors import CodetuneError, first_line
from trainer.fileio import atomic_write_json, cache_root
from trainer.models import DEFAULT_ALIASES, embedded_default_path, load_model
from trainer.retrieval import BACKEND_COMPUTES, Kind

if TYPE_CHECKING:
    import openvino as ov

# compute -> (sentence-transformers backend, int8 or not)
BACKENDS = {compute: (compute.split("-")[0], compute.endswith("-int8")) for compute in BACKEND_COMPUTES}
_EXTRA = {"openvino": ("optimum.intel.openvino", "openvino")}
INT8_FILE = "openvino/openvino_model_qint8_quantized.xml"  # where sentence-transformers' own export puts it
CALIBRATION_TEXTS = 300  # OpenVINO static int8: Optimum's default sample count
META = "codetune_export.json"
# What Optimum's OVModelForFeatureExtraction feeds its graph and reads from it; another graph runs through Optimum.
GRAPH_INPUTS = {"input_ids", "attention_mask", "token_type_ids"}
GRAPH_OUTPUT = "last_hidden_state"


def check_backend(compute: str, flag: str = "--compute") -> None:
    """A one-line error naming ``flag`` and the extra to install when ``compute``'s backend is missing."""
    backend, _ = BACKENDS[compute]
    module, extra = _EXTRA[backend]
    try:
        __import__(module)
    except ImportError as err:
        raise CodetuneError(
            f"{flag} {compute}: needs Optimum's {backend} backend ({err.name or module} is not installed); "
            f"pip install 'codetune[{extra}]'"
        ) from None


def load_encoder(spec: str, compute: str, max_seq_length: int | None = None) -> SentenceTransformer:
    """``spec`` as :func:`trainer.models.load_model` resolves it, ready to encode with ``compute``.

    Args:
        spec: a model spec (``default``, a folder, a hub name).
        compute: a torch compute (``auto``, ``bf16``, ``fp32``: the torch model, which
            :func:`trainer.retrieval.encode` runs under autocast or not) or a key of :data:`BACKENDS`
            (the cached export, made on first use).
        max_seq_length: as for ``load_model``; part of an export's key.

    Returns:
        A SentenceTransformer. An exported one's ``codetune_fingerprint`` (see
        :func:`trainer.embedding_cache.model_fingerprint`) hashes the torch weights' and ``compute``.

    Raises:
        CodetuneError: the backend is not installed, or the model cannot be loaded or exported.
    """
    if compute not in BACKENDS:
        return load_model(spec, max_seq_length=max_seq_length)
    check_backend(compute)
    folder = cache_root() / "encoders" / _export_key(spec, compute, max_seq_length)
    if not (folder / META).is_file():
        _export(spec, compute, max_seq_length, folder)
    meta = json.loads((folder / META).read_text())
    backend, _ = BACKENDS[compute]
    kwargs = {"file_name": meta["file_name"]} if meta["file_name"] else {}
    model = SentenceTransformer(str(folder), backend=backend, model_kwargs=kwargs, device="cpu")
    # The backend and int8 change the embeddings: an index or a score cache keyed by this model
    # must not match the torch model's, nor another backend's.
    model.codetune_fingerprint = hashlib.sha256(f"{meta['fingerprint']}:{compute}".encode()).hexdigest()[:16]
    return model


def encode_async(model: SentenceTransformer, batches: list[list[str]], kind: Kind) -> Iterator[torch.Tensor] | None:
    """Each batch's embeddings as ``encode_query``/``encode_document`` give them, several batches at once.

    sentence-transformers runs one batch at a time through the graph Optimum compiled for latency,
    tokenizing while the cores wait. Here the graph is compiled for throughput (on 2 cores: 2
    streams of one core each), an ``openvino.AsyncInferQueue`` keeps every stream busy with a
    batch, and the next batch is tokenized meanwhile: about 10 % more texts/s on 2 cores. Preprocessing
    (prompt, ``max_seq_length``) is sentence-transformers' own, and the modules after the
    transformer (pooling, ``Dense``, ``Normalize``) run in torch as its forward runs them.

    Args:
        model: a model :func:`load_encoder` loaded with an OpenVINO compute.
        batches: the texts, batch by batch; each batch is padded to its longest text.
        kind: ``query`` or ``document``: the prompt and task ``encode_query``/``encode_document`` use.

    Returns:
        (b_i, D) float32 CPU tensors, one per batch, in ``batches``' order; or None where one batch
        gains nothing from a second stream, or for a model this does not run (a ``Router``, a first
        module other than a Transformer over an OpenVINO graph): encode it batch by batch then.
    """
    compiled = _throughput_model(model) if len(batches) > 1 else None
    return None if compiled is None else _run_async(model, compiled, batches, kind)


def _throughput_model(model: SentenceTransformer) -> ov.CompiledModel | None:
    """``model``'s transformer graph compiled for throughput, once per model; None if it has no such graph."""
    compiled = getattr(model, "_codetune_throughput", None)
    if compiled is not None:
        return compiled
    first = model[0]
    if (not isinstance(first, Transformer) or first.backend != "openvino" or any(isinstance(m, Router) for m in model)
            or first.modality_config.get("text") != {"method": "forward", "method_output_name": GRAPH_OUTPUT}):
        return None
    import openvino as ov  # here: the openvino extra, which most installs lack

    graph = getattr(first.auto_model, "model", None)  # Optimum Intel's OVModel keeps its ov.Model there
    if (not isinstance(graph, ov.Model) or not {port.get_any_name() for port in graph.inputs} <= GRAPH_INPUTS
            or GRAPH_OUTPUT not in {name for port in graph.outputs for name in port.get_names()}):
        return None
    # Optimum's own settings (an inference precision, say), so the arithmetic is the same, with the
    # throughput hint for its latency one: the hint picks the streams. load_encoder loads on the CPU.
    config = {**getattr(first.auto_model, "ov_config", {}), "PERFORMANCE_HINT": "THROUGHPUT"}
    model._codetune_throughput = compiled = ov.Core().compile_model(graph, "CPU", config)
    return compiled


def _run_async(
    model: SentenceTransformer, compiled: ov.CompiledModel, batches: list[list[str]], kind: Kind
) -> Iterator[torch.Tensor]:
    import openvino as ov

    # encode_query/encode_document's prompt: the kind's own, even empty, else the default prompt
    prompt = model.prompts.get(kind, model.prompts.get(model.default_prompt_name))
    names = [port.get_any_name() for port in compiled.inputs]
    queue = ov.AsyncInferQueue(compiled)  # as many requests as the streams take at once
    done: dict[int, np.ndarray] = {}  # finished batches' token embeddings, waiting for the earlier ones
    queue.set_callback(lambda request, i: done.__setitem__(i, request.get_tensor(GRAPH_OUTPUT).data.copy()))
    features: dict[int, dict] = {}
    ready = 0
    threads = torch.get_num_threads()
    # The streams hold every core; torch's pool, spinning after each small pooling, would slow them (2-3 %).
    torch.set_num_threads(1)
    try:
        for i, texts in enumerate(batches):
            features[i] = f = model.preprocess(texts, prompt=prompt, task=kind)
            # Optimum feeds zero token types where the tokenizer gives none
            arrays = {n: (f[n] if n in f else torch.zeros_like(f["input_ids"])).numpy() for n in names}
            queue.start_async(arrays, i)  # waits for a free request: the streams are all busy till then
            while ready in done:
                yield _finish(model, features.pop(ready), done.pop(ready), kind)
                ready += 1
        queue.wait_all()
        for i in range(ready, len(batches)):
            yield _finish(model, features.pop(i), done.pop(i), kind)
    finally:
        torch.set_num_threads(threads)


def _finish(model: SentenceTransformer, features: dict, hidden: np.ndarray, kind: Kind) -> torch.Tensor:
    """The modules after the transformer, given its (b, L, H) output ``hidden``: a (b, D) embedding."""
    features[model[0].module_output_name] = torch.from_numpy(hidden)
    # sentence-transformers' forward: each module gets the call's kwargs (the task) that it declares
    kwargs = {"task": kind}
    for name, module in list(model.named_children())[1:]:
        keys = set((model.module_kwargs or {}).get(name, ())) | set(getattr(module, "forward_kwargs", ()))
        features = module(features, **{k: v for k, v in kwargs.items() if k in keys})
    return features["sentence_embedding"][:, : model.truncate_dim]


def _export_key(spec: str, compute: str, max_seq_length: int | None) -> str:
    local = embedded_default_path() if spec.lower() in DEFAULT_ALIASES else Path(spec).expanduser()
    h = hashlib.sha256(repr((compute, max_seq_length, _versions())).encode())
    if local.is_dir():
        h.update(str(local.resolve()).encode())
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            st = file.stat()
            h.update(f"{file.relative_to(local)}:{st.st_size}:{st.st_mtime_ns}".encode())
    else:
        h.update(spec.encode())  # a hub name: its revision is the hub cache's business
    return h.hexdigest()[:20]


def _versions() -> tuple[str, ...]:
    out = []
    for dist in ("sentence-transformers", "optimum", "optimum-intel", "openvino", "nncf"):
        try:
            out.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return tuple(out)


def _export(spec: str, compute: str, max_seq_length: int | None, folder: Path) -> None:
    """Write the export into ``folder`` atomically: a failure or a concurrent export leaves no half folder."""
    backend, int8 = BACKENDS[compute]
    torch_model = load_model(spec, max_seq_length=max_seq_length)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        torch_model.save(str(tmp))
        try:
            exported = SentenceTransformer(str(tmp), backend=backend, device="cpu")
            exported.save(str(tmp))  # writes openvino/openvino_model.xml beside the modules
            file_name = _quantize(exported, tmp) if int8 else None
        except (OSError, ValueError, RuntimeError) as err:
            raise CodetuneError(f"model {spec!r}: cannot be exported to {backend} ({first_line(err)})") from None
        atomic_write_json(tmp / META, {"spec": spec, "compute": compute, "file_name": file_name,
                                       "fingerprint": model_fingerprint(torch_model)})
        try:
            tmp.rename(folder)
        except OSError:  # another process exported it first: theirs is as good
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _quantize(model: SentenceTransformer, folder: Path) -> str:
    """Static int8 (weights and activations) written into ``folder``; returns the file to load.

    sentence-transformers' ``export_static_quantized_openvino_model`` calibrates on a hub dataset;
    with no hub, Optimum Intel's quantizer is given code from this interpreter's standard library.
    """
    # Here: Optimum Intel is the openvino extra, absent from most installs; datasets only with it.
    from datasets import Dataset
    from optimum.intel.openvino import OVConfig, OVQuantizationConfig, OVQuantizer

    texts = calibration_texts()
    tokens = model.tokenizer(texts, padding="max_length", max_length=model.max_seq_length, truncation=True)
    config = OVConfig(quantization_config=OVQuantizationConfig(num_samples=len(texts)))
    with tempfile.TemporaryDirectory() as out:
        OVQuantizer.from_pretrained(model.transformers_model).quantize(
            calibration_dataset=Dataset.from_dict(dict(tokens)), save_directory=out, ov_config=config
        )
        written = Path(out) / "openvino"  # sentence-transformers' save wrapper nests the graph, as it does in its export
        target = folder / INT8_FILE
        shutil.move(written / "openvino_model.xml", target)
        shutil.move(written / "openvino_model.bin", target.with_suffix(".bin"))
    return INT8_FILE


def calibration_texts(n: int = CALIBRATION_TEXTS) -> list[str]:
    """``n`` texts in the two shapes encoded: functions as written and their docstrings' first lines.

    Taken from the running interpreter's standard library in sorted file order, so every machine
    with the same Python calibrates alike, and no user's code nor any evaluation set is involved.
    Read with ``ast`` here rather than the miner: trainer.data's command line loads models.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    codes: list[str] = []
    questions: list[str] = []
    for path in sorted(root.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text)
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                codes.append(textwrap.dedent(ast.get_source_segment(text, node, padded=True) or ""))
                doc = ast.get_docstring(node)
                if doc and doc.strip():
                    questions.append(doc.strip().splitlines()[0])
        if len(codes) >= n and len(questions) >= n:
            break
    half = n // 2
    return codes[: n - half] + questions[:half]
