"""Prepare training data under `accelerate launch` and dump what each rank holds; launched by tests.

    accelerate launch --multi_gpu --num_processes 2 tests/data_worker.py SOURCE OUT_DIR [MODEL]

Writes OUT_DIR/rows-<rank>.json, OUT_DIR/files-<rank>.json (the files its rows are memory-mapped
from), OUT_DIR/broadcast-<n>.pkl (what the main process sent, pickled) and appends one line to
OUT_DIR/mined.log per mining pass.
With MODEL, 2 hard negatives per row are mined too, and each rank appends to OUT_DIR/encoded.log
how many documents it encoded for them.
"""

import json
import pickle
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trainer.data.mining as mining  # noqa: E402
import trainer.data.negatives as negatives  # noqa: E402
from trainer import run  # noqa: E402
from trainer.data import DataConfig, shared  # noqa: E402
from trainer.errors import cli_main  # noqa: E402
from trainer.tracking import TrackingConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    source, out = sys.argv[1], Path(sys.argv[2])
    real = mining.mine

    def counted(*args, **kwargs):
        with (out / "mined.log").open("a") as f:
            f.write("mined\n")
        return real(*args, **kwargs)

    mining.mine = counted
    real_broadcast = shared.broadcast_object_list

    def recorded(objects, *args, **kwargs):
        if acc.is_main_process:
            sent = len(list(out.glob("broadcast-*.pkl")))
            (out / f"broadcast-{sent}.pkl").write_bytes(pickle.dumps(objects))
        return real_broadcast(objects, *args, **kwargs)

    shared.broadcast_object_list = recorded
    acc = run.make_accelerator("no", TrackingConfig(wandb="disabled"), seed=0)
    model, mined = None, 0
    if len(sys.argv) > 3:
        from trainer.models import load_model

        model, mined = load_model(sys.argv[3]), 2
        real_share = negatives.encode_share

        def logged(model, texts, kind, *args, **kwargs):
            share = real_share(model, texts, kind, *args, **kwargs)
            if kind == "document":
                with (out / "encoded.log").open("a") as f:
                    f.write(f"{acc.process_index} {len(share.positions)} {len(texts)}\n")
            return share

        negatives.encode_share = logged
    run_dir = out / "run"
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
    config = DataConfig(source=source, test_fraction=0.5, seed=3, hard_negatives=mined, hard_negatives_window=[0, 10])
    data = shared.load_data_once(config, run_dir, model, acc)
    (out / f"rows-{acc.process_index}.json").write_text(json.dumps(data.train.to_list()))
    (out / f"files-{acc.process_index}.json").write_text(json.dumps([f["filename"] for f in data.train.cache_files]))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
