"""Prepare held-out data and run the recipes' base evaluation under `accelerate launch`; launched by tests.

    accelerate launch --multi_gpu --num_processes 2 tests/eval_worker.py MODEL_DIR SOURCE OUT_DIR

Each rank counts the texts it encodes and writes OUT_DIR/rank-<rank>.json: those counts, the
metrics it got back, the fingerprint of the held-out set it holds, and what a second (resumed)
base evaluation cost it, and a third in another run folder (the base scores from $CODETUNE_CACHE).
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import run  # noqa: E402
from trainer.data import DataConfig, shared  # noqa: E402
from trainer.errors import cli_main  # noqa: E402
from trainer.models import load_model  # noqa: E402
from trainer.tracking import TrackingConfig  # noqa: E402


def counting(model) -> dict[str, int]:
    """Wrap ``model``'s encoders so that the texts each one is given are counted."""
    counts = {"query": 0, "document": 0}
    for kind in counts:
        real = getattr(model, f"encode_{kind}")

        def counted(texts, *args, _real=real, _kind=kind, **kwargs):
            counts[_kind] += len(texts)
            return _real(texts, *args, **kwargs)

        setattr(model, f"encode_{kind}", counted)
    return counts


def main(argv: list[str] | None = None) -> int:
    model_dir, source, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    acc = run.make_accelerator("no", TrackingConfig(wandb="disabled"), seed=0, cpu_threads=1)
    run_dir = out / "run"
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
    data = shared.load_data_once(DataConfig(source=source, test_fraction=0.5, seed=3), run_dir, None, acc)
    model = load_model(model_dir, preset="bge", device=str(acc.device))
    counts = counting(model)
    cfg = run.EvalConfig(batch_size=8)
    before = run.evaluate_base(model, data.eval_data, [32, 16], cfg, acc, run_dir)
    first = dict(counts)
    again = run.evaluate_base(model, data.eval_data, [32, 16], cfg, acc, run_dir)  # as a resumed run does
    resumed = dict(counts)
    cached = run.evaluate_base(model, data.eval_data, [32, 16], cfg, acc, out / "other-run")  # as the next run does
    record = {
        "counts": first,
        "resumed_counts": {k: resumed[k] - first[k] for k in counts},
        "cached_counts": {k: counts[k] - resumed[k] for k in counts},
        "metrics": before,
        "resumed_metrics": again,
        "cached_metrics": cached,
        "fingerprint": data.eval_data.fingerprint(),
        "queries": len(data.eval_data.relevant()),
        "documents": len(data.eval_data.corpus),
    }
    (out / f"rank-{acc.process_index}.json").write_text(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
