"""The batch scripts in launch/ on a real SLURM cluster: a single-node run to the end, and a two-node
run that is sent the time-limit warning, checkpoints, requeues itself and resumes.

The cluster is Debian's slurmctld, two slurmd and munge on this machine, started as root by
``launch/local_cluster.sh`` with everything under a temporary folder (``.ci/install_slurm.sh``
installs the packages). Where they cannot run, the tests skip and say why. Each job trains the tiny
BERT on CPU: 2 processes on one node, or 1 process on each of two nodes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
LOCAL_CLUSTER = ROOT / "launch" / "local_cluster.sh"
RECIPE = ROOT / "recipes" / "matryoshka.py"
# Hardware flags for this machine (no GPUs); the scripts' #SBATCH lines are only defaults.
CPU_JOB = ["--gpus-per-node=0", "--time=10"]
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])  # daemons live in sbin
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


class Cluster:
    def __init__(self, folder: Path):
        self.folder = folder
        bin_dir = str(Path(sys.executable).parent)  # `accelerate` of this environment; sbatch exports PATH
        self.env = {
            **os.environ,
            "SLURM_CONF": str(folder / "slurm.conf"),
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "CODETUNE_ACCELERATE_ARGS": "--mixed_precision no",
            "ACCELERATE_CONFIG": str(ROOT / "accelerate_config.yaml"),
            "OMP_NUM_THREADS": "1",
        }

    def run(self, *cmd: str, **env: str) -> str:
        proc = subprocess.run(cmd, check=False, env={**self.env, **env}, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr}"
        return proc.stdout

    def submit(self, script: str, workdir: Path, *args: str, nodes: int, processes_per_node: int) -> str:
        """sbatch a script from launch/ in `workdir` (its log goes to workdir/logs); returns the job id."""
        (workdir / "logs").mkdir(parents=True, exist_ok=True)
        flags = [*CPU_JOB, f"--nodes={nodes}", f"--cpus-per-task={processes_per_node}", f"--chdir={workdir}"]
        script_path = str(ROOT / "launch" / script)
        out = self.run("sbatch", "--parsable", *flags, script_path, *args, NPROC_PER_NODE=str(processes_per_node))
        return out.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (there is no accounting database on this cluster)."""
        return dict(re.findall(r"(\w+)=(\S*)", self.run("scontrol", "show", "job", "-o", job_id)))

    def wait(self, job_id: str, log: Path, timeout: float = 150) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["JobState"] in DONE:
                return job
            time.sleep(1)
        subprocess.run(["scancel", job_id], check=False, env=self.env)
        pytest.fail(f"job {job_id} still {job['JobState']} after {timeout} s; log:\n{tail(log)}")


def read_log(path: Path) -> str:
    """A job's log; both nodes' processes write progress bars into it at once, so a multi-byte
    character can be split between two writes (seen in CI): such bytes are replaced, not fatal."""
    return path.read_text(errors="replace")


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(read_log(path).splitlines()[-lines:]) if path.exists() else f"({path} missing)"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("SLURM test cluster needs root (slurmd starts jobs as their user)")
    missing = [t for t in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(t, path=SBIN_PATH) is None]
    if missing:
        pytest.skip(f"SLURM not installed ({', '.join(missing)} missing); run .ci/install_slurm.sh")
    folder = tmp_path_factory.mktemp("slurm")
    # Two slurmd on this machine, each offering its 2 cores: multi-node jobs run for real.
    env = {**os.environ, "PATH": SBIN_PATH, "SLURM_NODES": "2", "SLURM_CPUS": "2"}
    start = ["bash", str(LOCAL_CLUSTER), "start", str(folder)]
    proc = subprocess.run(start, check=False, env=env, capture_output=True, text=True, timeout=90)
    try:
        if proc.returncode != 0:
            pytest.skip(f"SLURM daemons did not start: {proc.stderr.strip()[-1500:]}")
        yield Cluster(folder)
    finally:
        stop = ["bash", str(LOCAL_CLUSTER), "stop", str(folder)]
        subprocess.run(stop, check=False, env=env, capture_output=True, timeout=90)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, beir_code) -> Path:
    """Training pairs {query, positive} from the BEIR fixture's qrels."""
    corpus = {d["_id"]: d["text"] for d in map(json.loads, (beir_code / "corpus.jsonl").read_text().splitlines())}
    queries = {q["_id"]: q["text"] for q in map(json.loads, (beir_code / "queries.jsonl").read_text().splitlines())}
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    with path.open("w") as f:
        for qrels in sorted((beir_code / "qrels").glob("*.tsv")):
            for line in qrels.read_text().splitlines()[1:]:
                qid, did, score = line.split("\t")
                if int(score) > 0:
                    f.write(json.dumps({"query": queries[qid], "positive": corpus[did]}) + "\n")
    return path


def recipe_args(tiny_bert: Path, pairs: Path, beir_code: Path, out: Path, *overrides: str) -> list[str]:
    return [
        str(RECIPE), f"model.name={tiny_bert}", "model.preset=bge", "model.max_seq_length=64",
        "loss.matryoshka_dims=[32,16]", "loss.matryoshka_weights=null", f"data.source={pairs}", f"data.eval={beir_code}", f"output_dir={out}",
        "train.batch_size=8", "train.log_every=1", "train.warmup_ratio=0", *overrides,
    ]


def logged_steps(out: Path) -> list[int]:
    """Training steps in log.jsonl (evaluations are logged there too, without a loss)."""
    if not (out / "log.jsonl").exists():
        return []
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    return [row["step"] for row in rows if "loss" in row]


def assert_finished(job: dict[str, str], out: Path, log: Path) -> None:
    assert (job["JobState"], job["ExitCode"]) == ("COMPLETED", "0:0"), tail(log)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(out / "final"), device="cpu")
    assert model.encode(["def add(a, b): return a + b"]).shape[0] == 1
    assert json.loads((out / "eval.json").read_text())


def test_single_node_job_trains_and_saves(cluster, tiny_bert, pairs, beir_code, tmp_path):
    out = tmp_path / "run"
    args = recipe_args(tiny_bert, pairs, beir_code, out, "train.max_steps=4")
    job_id = cluster.submit("single_node.sbatch", tmp_path, *args, nodes=1, processes_per_node=2)
    log = tmp_path / "logs" / f"codetune-{job_id}.out"
    job = cluster.wait(job_id, log)
    assert_finished(job, out, log)
    assert job["Restarts"] == "0"
    assert "2 processes" in read_log(log)
    assert logged_steps(out)[-1] == 4


def test_preempted_two_node_job_checkpoints_requeues_and_resumes(cluster, tiny_bert, pairs, beir_code, tmp_path):
    out, steps = tmp_path / "run", 300
    args = recipe_args(tiny_bert, pairs, beir_code, out, f"train.max_steps={steps}", "train.checkpoint_every=1000")
    job_id = cluster.submit("multinode.sbatch", tmp_path, *args, nodes=2, processes_per_node=1)
    log = tmp_path / "logs" / f"codetune-{job_id}.out"

    # Mid-run, send what `--signal=B:USR1@120` sends before the time limit: USR1 to the batch shell.
    deadline = time.monotonic() + 120
    while len(logged_steps(out)) < 2:
        assert time.monotonic() < deadline, f"no step logged in 120 s; log:\n{tail(log)}"
        assert cluster.job(job_id)["JobState"] in {"PENDING", "RUNNING"}, tail(log)
        time.sleep(0.2)
    # Resent until the trap's line is logged: on the test cluster slurmd has been seen to drop an
    # early signal (no trap line, the run trained to the end). Delivery is SLURM's part; what this
    # test checks is what the trap, the recipe and the requeue do once it arrives.
    deadline = time.monotonic() + 60
    while "codetune: USR1" not in read_log(log):
        assert time.monotonic() < deadline, f"USR1 never reached the batch shell; log:\n{tail(log)}"
        assert cluster.job(job_id)["JobState"] == "RUNNING", tail(log)
        cluster.run("scancel", "--signal=USR1", "--batch", job_id)
        time.sleep(2)

    # The rerun loads the model again and trains nearly all 300 steps on 2 shared cores: give it
    # room (one CI run had it at step 228 of 300 when 150 s were up; one with another job on the
    # cores, at 2 s a step, at step 187 when 420 s were up).
    job = cluster.wait(job_id, log, timeout=720)
    assert_finished(job, out, log)
    text = read_log(log)
    assert int(job["Restarts"]) >= 1, text
    assert "requeueing" in text and "restart 1" in text, text
    assert "2 nodes x 1 processes" in text, text
    # The first run saved a checkpoint mid-way (periodic ones are off) and the rerun went on from
    # it: every step logged once, none twice, none lost.
    saved = [int(p.name.removeprefix("step-")) for p in (out / "checkpoints").glob("step-*")]
    assert len(saved) == 1 and 0 < saved[0] < steps, (saved, text)
    assert logged_steps(out) == list(range(1, steps + 1))
    assert not list(out.glob(".stop*")), "the stop file outlived the job"
