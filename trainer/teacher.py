"""A stronger model's view of the training data, for score distillation (``loss.teacher``).

The student is trained with InfoNCE, whose target puts all the weight on the positive. A teacher
that already retrieves better (all-mpnet-base-v2 is 5 NDCG@10 above all-MiniLM-L6-v2 on people's
questions, 10 out of domain) also knows how near each in-batch negative is; its softmax over the
same candidates becomes part of the target (:func:`trainer.losses.info_nce`).

Only the teacher's embeddings are needed, never its gradients, so every training text is encoded
once, before training, and cached on disk by the teacher's weights and the texts
(:mod:`trainer.embedding_cache`): a step costs two small matrix products more, and a second run
on the same data pays nothing.
"""

from __future__ import annotations

import gc

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from trainer.embedding_cache import cached_encode
from trainer.errors import CodetuneError
from trainer.models import load_model
from trainer.rows import Rows, chunks


class Teacher:
    """The teacher's L2-normalised embeddings of every training query and document, looked up by text.

    Args:
        queries, documents: the distinct texts, in the order of the rows of ``query_emb`` and
            ``doc_emb`` ((Nq, T) and (Nd, T) float).
    """

    def __init__(self, queries: list[str], query_emb: torch.Tensor, documents: list[str], doc_emb: torch.Tensor):
        self._q = {t: i for i, t in enumerate(queries)}
        self._d = {t: i for i, t in enumerate(documents)}
        self.query_emb = F.normalize(query_emb.float(), dim=-1)
        self.doc_emb = F.normalize(doc_emb.float(), dim=-1)

    def embed(self, queries: list[str], documents: list[str], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's embeddings of a batch: (b, T) queries and (len(documents), T) documents on ``device``."""
        try:
            q = self.query_emb[[self._q[t] for t in queries]]
            d = self.doc_emb[[self._d[t] for t in documents]]
        except KeyError:
            raise CodetuneError("loss.teacher: a training text has no teacher embedding (the rows changed after it was encoded)") from None
        return q.to(device), d.to(device)


def training_texts(rows: Rows) -> tuple[list[str], list[str]]:
    """The distinct queries and documents (positives and any hard negatives) of ``rows``, in first-seen order."""
    queries: dict[str, None] = {}
    documents: dict[str, None] = {}
    for part in chunks(rows, ["query", "positive", "negatives"]):
        queries.update(dict.fromkeys(part["query"]))
        documents.update(dict.fromkeys(part["positive"]))
        for negs in part["negatives"]:
            documents.update(dict.fromkeys(negs or []))
    return list(queries), list(documents)


def load_teacher(name: str, rows: Rows, acc: Accelerator, max_seq_length: int, batch_size: int = 64) -> Teacher:
    """Encode every training text with the model ``name`` (as ``model.name`` takes it), then let it go.

    Every process encodes a share and all get every row; bf16 where training runs in bf16. The
    teacher sees the texts cut at the student's ``max_seq_length``, as the student does.
    """
    try:
        model = load_model(name, max_seq_length=max_seq_length, device=str(acc.device))
    except CodetuneError as err:
        raise CodetuneError(f"loss.teacher: {err}") from None
    model.eval()
    compute = "bf16" if acc.mixed_precision == "bf16" else "fp32"
    queries, documents = training_texts(rows)
    acc.print(f"loss.teacher={name}: embedding {len(queries)} queries and {len(documents)} documents (cached by text)")
    rank, world = acc.process_index, acc.num_processes
    q, _ = cached_encode(model, queries, "query", batch_size, compute, rank, world)
    d, _ = cached_encode(model, documents, "document", batch_size, compute, rank, world)
    del model
    gc.collect()  # the teacher's weights go before training's activations come
    return Teacher(queries, q, documents, d)
