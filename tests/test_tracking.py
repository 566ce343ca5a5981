"""What reaches W&B, read back from the real offline run: each step once across a resume; a W&B that
cannot start costs one warning, not the run; the dashboard's group, tags, config, data, results, plot and model."""

import json
import warnings
from pathlib import Path

import pytest
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from trainer.errors import CodetuneError
from trainer.tracking import Tracker, TrackingConfig


@pytest.fixture
def accelerator():
    import wandb

    acc = Accelerator(log_with="wandb")
    yield acc
    AcceleratorState._reset_state(reset_partial_state=True)
    wandb.teardown()  # W&B reads its environment once per process: the next test sets its own


def spy_on_wandb(acc: Accelerator) -> list[int]:
    """Steps the tracker hands to W&B, in order (the real W&B still gets each call)."""
    sent, real = [], acc.log

    def log(values, step=None, **kwargs):
        sent.append(step)
        real(values, step=step, **kwargs)

    acc.log = log
    return sent


def logged_steps(run_dir) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_a_resumed_run_sends_each_step_to_wandb_once(accelerator, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = TrackingConfig(wandb="offline")
    first = Tracker(accelerator, tmp_path, cfg, {"lr": 1e-3}, run_name="run")
    sent = spy_on_wandb(accelerator)
    for step in range(1, 6):  # checkpoint at 3, killed after step 5 was logged
        first.log({"loss": 1.0 / step}, step)
    first.finish()

    resumed = Tracker(accelerator, tmp_path, cfg, {"lr": 1e-3}, run_name="run")
    resumed.rewind(3)
    for step in range(4, 9):  # 4 and 5 again (bit-identical: resume is exact), then new steps
        resumed.log({"loss": 1.0 / step}, step)
    resumed.finish()

    assert sent == [1, 2, 3, 4, 5, 6, 7, 8]
    assert logged_steps(tmp_path) == [1, 2, 3, 4, 5, 6, 7, 8]
    # Both processes wrote to one W&B run: the id made on the first start was reused.
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    run_id = (tmp_path / "wandb" / "codetune-run-id").read_text()
    assert len(runs) >= 2 and all(f"-{run_id}" in r.name for r in runs)


def test_wandb_that_cannot_start_costs_one_warning_not_the_run(accelerator, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)  # a well-formed key no server knows
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "5")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = Tracker(accelerator, tmp_path, TrackingConfig(wandb="online"), {}, run_name="run")
        for step in range(1, 4):
            tracker.log({"loss": 1.0}, step)
        tracker.finish()
    ours = [w for w in caught if "W&B" in str(w.message)]
    assert len(ours) == 1 and "could not start" in str(ours[0].message) and "training goes on" in str(ours[0].message)
    assert logged_steps(tmp_path) == [1, 2, 3]


def wandb_records(run_dir, timeout: float = 60) -> list:
    """Every record of the W&B offline runs in ``run_dir/wandb``, in order, as W&B's own protobuf messages.

    W&B's service process writes the file after ``finish`` returns: each file is read once its
    exit record is there. It is a LevelDB-style log: a 7-byte header (":W&B", magic, version), then
    records of <crc32, length, kind> + payload in 32 KiB blocks, each whole or in first/middle/last pieces.
    """
    import time

    deadline = time.monotonic() + timeout
    while True:
        runs = [_read_records(path) for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))]
        if all(of_kind(records, "exit") for records in runs) or time.monotonic() > deadline:
            return [record for records in runs for record in records]
        time.sleep(0.5)


def _read_records(path) -> list:
    import struct

    from wandb.proto import wandb_internal_pb2

    out, data, pos, block, pieces = [], path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room for a header: the block's tail is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if pos + 7 + length > len(data):  # the writer is mid-record
            break
        pieces += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            out.append(record)
            pieces = b""
    return out


def of_kind(records, kind: str) -> list:
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def logged_table(run_dir, key: str) -> dict:
    """The JSON of the table logged under ``key`` (W&B writes it under files/media/table/)."""
    (path,) = run_dir.glob(f"wandb/offline-run-*/files/media/table/{key}_*.table.json")
    return json.loads(path.read_text())


BEFORE = {"32": {"ndcg@10": 0.50, "mrr@10": 0.40}, "16": {"ndcg@10": 0.40, "mrr@10": 0.30}}
AFTER = {"32": {"ndcg@10": 0.60, "mrr@10": 0.45}, "16": {"ndcg@10": 0.55, "mrr@10": 0.42}}


@pytest.mark.parametrize("mode", ["files", "reference"])
def test_the_dashboard_has_group_tags_config_data_results_plot_and_the_model(accelerator, tmp_path, monkeypatch, mode):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run_dir, model = tmp_path / "run", tmp_path / "run" / "final"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"\0" * 4096)
    config = {"model": {"name": "/models/my-encoder"}, "data": {"source": ["stdlib", "/src/myrepo"]}, "train": {"lr": 1e-3}}
    tracker = Tracker(accelerator, run_dir, TrackingConfig(wandb="offline", model_artifact=mode), config, "run", group="lora")
    tracker.log({"loss": 1.0}, 1)
    summary = {"train_rows": 10, "languages": {"python": 7, "go": 3}, "split": "10% of files held out"}
    tracker.log_data(summary)
    tracker.log_results(BEFORE, AFTER)
    tracker.log_model(model, "lora-run", {"metrics": AFTER})
    tracker.finish()

    records = wandb_records(run_dir)
    (run,) = of_kind(records, "run")
    assert run.run_group == "lora" and run.job_type == "train"
    assert list(run.tags) == ["model:my-encoder", "data:stdlib", "data:myrepo"]
    config_seen = {u.key: json.loads(u.value_json) for c in of_kind(records, "config") for u in c.update if u.key}
    assert config_seen["train"] == {"lr": 1e-3} and config_seen["data_summary"] == summary

    table = logged_table(run_dir, "eval/results")
    assert table["columns"] == ["dim", "metric", "base", "tuned", "change"]
    rows = {(r[0], r[1]): r[2:] for r in table["data"]}
    assert len(rows) == 4 and rows[(16, "ndcg@10")] == pytest.approx([40.0, 55.0, 15.0])
    plot = logged_table(run_dir, "eval/ndcg@10_by_dim_table")  # the line plot's data: one line per model
    lines = {}
    for row in plot["data"]:
        lines.setdefault(row[plot["columns"].index("lineKey")], []).append(row[plot["columns"].index("lineVal")])
    assert lines == {"base": pytest.approx([40.0, 50.0]), "tuned": pytest.approx([55.0, 60.0])}

    (artifact,) = [a for a in of_kind(records, "artifact") if a.type == "model"]
    assert artifact.name == "lora-run" and set(artifact.aliases) == {"latest", "final"}
    (entry,) = artifact.manifest.contents
    if mode == "reference":  # nothing copied: W&B records where the model lies
        assert entry.ref == (model / "model.safetensors").resolve().as_uri() and not entry.local_path
    else:  # uploaded from where it lies at sync time, not copied into W&B's staging folder first
        assert entry.local_path == str(model / "model.safetensors") and entry.size == 4096


def test_the_model_is_a_reference_on_shared_storage_and_files_elsewhere(tmp_path, monkeypatch):
    from trainer import tracking

    assert tracking.filesystem_type(Path("/proc/self")) == "proc"
    assert tracking.artifact_mode("auto", tmp_path) == ("reference" if tracking.filesystem_type(tmp_path) in tracking.SHARED_FILESYSTEMS else "files")
    monkeypatch.setattr(tracking, "filesystem_type", lambda path: "nfs4")
    assert tracking.artifact_mode("auto", tmp_path) == "reference"
    assert tracking.artifact_mode("files", tmp_path) == "files"
    with pytest.raises(CodetuneError, match="tracking.model_artifact: 'copy'"):
        TrackingConfig(model_artifact="copy")
