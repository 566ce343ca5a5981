"""Training rows streamed from Arrow: the batches of the list-of-dicts path, rows read from disk, not broadcast."""

import json
import random
from pathlib import Path

PLANS = Path(__file__).parent / "fixtures" / "batch_plans.json"

# train settings of the recorded plans: (name, TrainConfig fields, processes)
CONFIGS = [
    ("random, negatives as the data has them", {"batch_size": 6, "hard_negatives": None, "epochs": 2.0}, 1),
    (
        "by file, half, 2 processes",
        {"batch_size": 4, "hard_negatives": 2, "group_by_source": "file", "source_share": 0.5, "epochs": 1.5},
        2,
    ),
    ("by length, no negatives", {"batch_size": 8, "hard_negatives": 0, "group_by_length": True, "epochs": 2.0}, 1),
    (
        "by folder, seed 3",
        {"batch_size": 6, "hard_negatives": 1, "group_by_source": "folder", "epochs": 1.0, "seed": 3},
        1,
    ),
    (
        "accumulation, 4 negatives",
        {"batch_size": 4, "hard_negatives": 4, "gradient_accumulation_steps": 2, "epochs": 1.0},
        1,
    ),
    ("too big a batch", {"batch_size": 40, "hard_negatives": 4, "group_by_source": "file"}, 1),
]


def plan_rows() -> list[dict]:
    """100 rows over 12 files in 3 folders and 4 without a path: two query forms share each positive,
    0-4 negatives per row, some of them other rows' positives, code of 2-40 lines."""
    rng = random.Random(7)
    code = {(f, j): f"def f{f}_{j}(x):\n" + "    x += 1\n" * rng.randrange(1, 40) for f in range(12) for j in range(4)}
    rows = []
    for (f, j), positive in code.items():
        negatives = [
            code[rng.randrange(12), rng.randrange(4)] if rng.random() < 0.5 else f"def g{rng.randrange(30)}(): pass"
            for _ in range(rng.randrange(5))
        ]
        negatives = [n for n in negatives if n != positive]
        for form in ("doc", "name"):
            rows.append(
                {
                    "query": f"{form} {f}.{j}",
                    "positive": positive,
                    "negatives": negatives,
                    "path": f"pkg{f % 3}/m{f}.py",
                }
            )
    rows += [
        {"query": f"own {i}", "positive": f"def own{i}(): return {i}", "negatives": [], "path": None} for i in range(4)
    ]
    return rows


def plans(rows) -> dict:
    """What training draws from ``rows`` under each of :data:`CONFIGS`, in the form of ``batch_plans.json``."""
    import hashlib

    from trainer.data.batches import batch_texts, check_batches, run_batches, total_steps, with_negatives
    from trainer.errors import CodetuneError
    from trainer.loop import TrainConfig

    out = {}
    for name, fields, world in CONFIGS:
        cfg = TrainConfig(**fields)
        try:
            check_batches(rows, cfg, world)
        except CodetuneError as err:
            out[name] = {"error": str(err)}
            continue
        planned, c, filled = with_negatives(rows, cfg)
        batches, b = run_batches(planned, c, world), c.batch_size
        plan, digests = [], []
        for _ in range(total_steps(c, len(planned), world) * c.gradient_accumulation_steps):
            idx = next(batches)
            texts = [batch_texts(planned.take(idx[r * b : (r + 1) * b]), c.hard_negatives) for r in range(world)]
            plan.append(idx)
            digests.append(hashlib.sha1(json.dumps(texts).encode()).hexdigest())
        out[name] = {"hard_negatives": c.hard_negatives, "filled": filled, "batches": plan, "texts_sha1": digests}
    return out


def test_rows_memory_mapped_from_disk_give_the_batches_of_the_list_of_dicts(tmp_path):
    """Batches, their order, the filled negatives and every text of every batch: as recorded from the
    list-of-dicts path before the rows moved to Arrow (d4d535f), from a list and from a saved dataset."""
    import datasets

    from trainer.rows import load_rows, save_rows

    recorded = json.loads(PLANS.read_text())
    del recorded["recorded"]
    assert plans(plan_rows()) == recorded
    save_rows(datasets.Dataset.from_list(plan_rows()), tmp_path / "train")
    on_disk = load_rows(tmp_path / "train")
    assert on_disk.cache_files and all(Path(f["filename"]).parent == tmp_path / "train" for f in on_disk.cache_files)
    assert plans(on_disk) == recorded


def test_every_rank_memory_maps_the_rows_the_main_process_wrote_and_none_are_broadcast(tmp_path):
    """2 processes: the rows travel as run_dir/data/train, not pickled in a message."""
    from test_training import launch_data_worker

    tree = Path(__file__).parent / "fixtures" / "code_tree"
    proc = launch_data_worker(tree, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = (tmp_path / "run" / "data" / "train").resolve()
    for rank in (0, 1):
        files = [Path(f) for f in json.loads((tmp_path / f"files-{rank}.json").read_text())]
        assert files and all(f.parent.resolve() == folder for f in files), files
    rows = json.loads((tmp_path / "rows-1.json").read_text())
    assert rows == json.loads((tmp_path / "rows-0.json").read_text())
    sent = [p.read_bytes() for p in tmp_path.glob("broadcast-*.pkl")]
    assert sent  # the held-out set and the report still go by message ...
    assert not any(r["positive"].encode() in blob for r in rows for blob in sent)  # ... the training rows do not
    assert not (tmp_path / "run" / "data" / "read").exists()
