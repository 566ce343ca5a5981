"""What a run reports: W&B through accelerate's trackers (offline without a key), a JSONL log, a progress bar.

Only numbers are logged. Code and queries stay out of W&B (codebases are private) unless the user
opts in with ``tracking.log_examples``.

The W&B run is a dashboard to compare runs at a glance: runs are grouped by recipe and tagged with
their model and data; the resolved config and a summary of the data are its config; the
before/after metrics at every Matryoshka dimension are a table and an NDCG@10-by-dimension line
plot; the final model is an artifact (a ``file://`` reference where the run folder lies on shared
storage, so a large model is not copied; its files otherwise).

W&B is a view, ``log.jsonl`` the record: if W&B cannot start or fails mid-run (a bad key, no
network), the run goes on with one warning and the JSONL log stays complete. A resumed run
continues the same W&B run (its id is kept in the run folder) and sends it only steps it has not
had: resume is exact, so the steps replayed after the checkpoint carry the values already sent.
"""

from __future__ import annotations

import json
import os
import re
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

from accelerate import Accelerator
from tqdm.auto import tqdm

from trainer.errors import CodetuneError
from trainer.fileio import atomic_write_text

ARTIFACT_MODES = ("auto", "reference", "files", "off")
# Filesystems that several machines mount: a file:// reference there is readable wherever the run is.
SHARED_FILESYSTEMS = {"nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "ceph", "cephfs", "glusterfs",
                      "fuse.glusterfs", "fuse.ceph", "panfs", "wekafs", "fuse.juicefs", "fuse.gcsfuse", "fuse.s3fs"}


@dataclass
class TrackingConfig:
    project: str = "codetune"  # W&B project
    wandb: str = "auto"  # auto: online with an API key, else offline (sync later: `wandb sync DIR`); or online|offline|disabled
    log_examples: bool = False  # send a few training (query, code) pairs to W&B; off: code is private
    # The final model as a W&B artifact: auto (a file:// reference on shared storage such as NFS or
    # Lustre, where copying a large model buys nothing; its files elsewhere) | reference | files | off
    model_artifact: str = "auto"

    def __post_init__(self) -> None:
        if self.model_artifact not in ARTIFACT_MODES:
            raise CodetuneError(f"tracking.model_artifact: {self.model_artifact!r} (choose from {', '.join(ARTIFACT_MODES)})")


def wandb_mode(setting: str) -> str:
    """Resolve ``auto`` to ``online`` when W&B credentials exist, else ``offline``."""
    if setting != "auto":
        return setting
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    has_key = bool(os.environ.get("WANDB_API_KEY")) or "api.wandb.ai" in _netrc()
    return "online" if has_key else "offline"


def _netrc() -> str:
    path = Path.home() / ".netrc"
    return path.read_text(errors="ignore") if path.is_file() else ""


def uses_wandb(cfg: TrackingConfig) -> bool:
    return wandb_mode(cfg.wandb) != "disabled"


def run_tags(config: dict) -> list[str]:
    """W&B tags for a run's model and data sources (``model:default``, ``data:stdlib``), 64 characters at most."""
    sources = config.get("data", {}).get("source", [])
    names = [("model", config.get("model", {}).get("name"))]
    names += [("data", s) for s in ([sources] if isinstance(sources, str) else sources)]
    return [f"{kind}:{Path(str(value)).name or value}"[:64] for kind, value in names if value]


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding ``path`` (``ext4``, ``nfs4``, ...), from the mount table; "" if unknown."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return ""
    target, best, kind = str(path.resolve()), -1, ""
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) > best:
            best, kind = len(point), fields[2]
    return kind


def artifact_mode(setting: str, folder: Path) -> str:
    """``auto`` resolved for ``folder``: ``reference`` on shared storage, else ``files``."""
    if setting != "auto":
        return setting
    return "reference" if filesystem_type(folder) in SHARED_FILESYSTEMS else "files"


class Tracker:
    """Rank-zero logging to the JSONL file, W&B (if on) and a tqdm bar; a no-op on other ranks."""

    def __init__(self, accelerator: Accelerator, run_dir: Path, cfg: TrackingConfig, config: dict, run_name: str,
                 group: str | None = None):
        """``group``: the W&B run group (the recipe), so that the runs of one recipe compare side by side."""
        self.accelerator = accelerator
        self.cfg = cfg
        self.main = accelerator.is_main_process
        self.log_path = run_dir / "log.jsonl"
        self.wandb = uses_wandb(cfg) and self.main
        self.bar = None
        # The last step W&B already has, from an earlier process on this run folder.
        self.sent_through = max((r.get("step", 0) for r in self._records()), default=-1)
        if self.wandb:
            mode = wandb_mode(cfg.wandb)
            os.environ.setdefault("WANDB_SILENT", "true")
            init = {"dir": str(run_dir), "mode": mode, "name": run_name, "id": _wandb_id(run_dir), "resume": "allow",
                    "group": group, "job_type": "train", "tags": run_tags(config)}
            self._wandb_call("could not start", accelerator.init_trackers, cfg.project, config=config, init_kwargs={"wandb": init})

    def _records(self) -> list[dict]:
        if not self.main or not self.log_path.is_file():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def _wandb_call(self, what: str, fn, *args, **kwargs) -> None:
        """``fn(*args, **kwargs)``; if W&B fails, one warning and W&B is off for the rest of the run."""
        try:
            fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 -- any W&B failure must not stop training
            self.wandb = False
            reason = " ".join(str(error).split())[:200]
            warnings.warn(f"W&B {what} ({type(error).__name__}: {reason}); training goes on, logging to {self.log_path} only",
                          RuntimeWarning, stacklevel=3)

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Append ``metrics`` at ``step`` to the JSONL log and W&B."""
        if not self.main:
            return
        self._append({"step": step, **metrics})
        if self.wandb and step > self.sent_through:
            self._wandb_call("stopped logging", self.accelerator.log, metrics, step=step)
        if self.bar is not None and "loss" in metrics:
            self.bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)

    def log_summary(self, values: dict[str, float], step: int) -> None:
        """``values`` once for the whole run: a ``log.jsonl`` record at ``step`` and the W&B run's summary (not its history)."""
        if not self.main:
            return
        self._append({"step": step, **values})
        if self.wandb:
            self._wandb_call("stopped logging", lambda: self._run().summary.update(values))

    def _append(self, record: dict) -> None:
        with self.log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def rewind(self, step: int) -> None:
        """Drop JSONL lines logged after ``step``: a resumed run logs those steps again, once."""
        if not self.main or not self.log_path.is_file():
            return
        lines = self.log_path.read_text().splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
        if len(kept) != len(lines):
            atomic_write_text(self.log_path, "".join(line + "\n" for line in kept))

    def log_examples(self, rows: list[dict]) -> None:
        """Send example pairs to W&B as a table; only called when the user opted in."""
        if self.wandb and self.sent_through < 0:
            import wandb  # ~0.5 s: only once a run sends to W&B

            table = wandb.Table(columns=["query", "code"], data=[[r["query"], r["positive"]] for r in rows])
            self._wandb_call("stopped logging", self.accelerator.log, {"examples": table})

    def _run(self):
        return self.accelerator.get_tracker("wandb", unwrap=True)

    def log_data(self, summary: dict) -> None:
        """The data summary (sources, counts, languages, split) into the W&B run's config, beside the resolved config."""
        if self.wandb:
            self._wandb_call("stopped logging", lambda: self._run().config.update({"data_summary": summary}, allow_val_change=True))

    def log_results(self, before: dict, after: dict) -> None:
        """The before/after metrics as a table (dim, metric, base, tuned, change; points) and NDCG@10 by dimension as a plot."""
        if not self.wandb:
            return
        import wandb  # ~0.5 s: only once a run sends to W&B

        dims = sorted(after, key=int)
        rows = [[int(d), name, 100 * before[d][name], 100 * after[d][name], 100 * (after[d][name] - before[d][name])]
                for d in dims for name in after[d]]
        table = wandb.Table(columns=["dim", "metric", "base", "tuned", "change"], data=rows)
        plot = wandb.plot.line_series(
            xs=[int(d) for d in dims], ys=[[100 * before[d]["ndcg@10"] for d in dims], [100 * after[d]["ndcg@10"] for d in dims]],
            keys=["base", "tuned"], title="NDCG@10 by embedding dimension", xname="dimension",
        )
        self._wandb_call("stopped logging", lambda: self._run().log({"eval/results": table, "eval/ndcg@10_by_dim": plot}))

    def log_model(self, folder: Path, name: str, metadata: dict) -> None:
        """``folder`` as a W&B model artifact: a ``file://`` reference or its files (``tracking.model_artifact``)."""
        mode = artifact_mode(self.cfg.model_artifact, folder)
        if not self.wandb or mode == "off":
            return
        import wandb  # ~0.5 s: only once a run sends to W&B

        def log() -> None:
            artifact = wandb.Artifact(re.sub(r"[^\w.-]+", "-", name), type="model", metadata=metadata)
            if mode == "reference":
                artifact.add_reference(folder.resolve().as_uri())
            else:
                artifact.add_dir(str(folder), policy="immutable")  # uploaded from where it lies: no staging copy
            self._run().log_artifact(artifact, aliases=["latest", "final"])

        self._wandb_call("could not log the model", log)

    def progress(self, total: int, initial: int) -> None:
        """Start the progress bar of the training steps (main process only)."""
        if self.main:
            self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close_progress(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def finish(self) -> None:
        self.close_progress()
        if self.wandb:
            self._wandb_call("could not finish", self.accelerator.end_training)


def _wandb_id(run_dir: Path) -> str:
    """This run folder's W&B run id: made on the first start, read back on every resume."""
    path = run_dir / "wandb" / "codetune-run-id"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, uuid.uuid4().hex[:12])
    return path.read_text().strip()
