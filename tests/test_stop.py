"""Runs end cleanly and resumably: a stop request during setup, a signalled launcher, a peer process that dies."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_recipes import FIXTURE, pairs  # noqa: F401 -- the fixture is used by name

ROOT = Path(__file__).resolve().parents[1]


def recipe_args(model, out, data):
    return [
        str(ROOT / "recipes" / "matryoshka.py"), f"model.name={model}", "model.preset=bge", f"output_dir={out}",
        f"data.source={data}", f"data.eval={FIXTURE}", "loss.matryoshka_dims=[32,16]", "loss.matryoshka_weights=null", "train.batch_size=8",
        "train.max_steps=40", "train.checkpoint_every=0", "train.log_every=1", "merge.alpha=1.0", "tracking.wandb=disabled",
    ]


def wait(proc: subprocess.Popen, seconds: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=seconds)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_a_stop_during_setup_checkpoints_the_first_step(tiny_bert, pairs, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, *recipe_args(tiny_bert, out, pairs)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    time.sleep(1.0)  # still importing torch: SIGUSR1's default action would kill the process here
    proc.send_signal(signal.SIGUSR1)
    stdout, stderr = wait(proc, 300)
    assert proc.returncode == 75, stderr[-2000:]
    assert "stopped at step 1 on request" in stdout and "Traceback" not in stderr
    assert (out / "checkpoints" / "latest").read_text() == "step-1"

    done = subprocess.run([sys.executable, *recipe_args(tiny_bert, out, pairs), "resume_from_checkpoint=latest"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines() if "loss" in line] == list(range(1, 41))


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")
def test_a_stop_signal_sends_stderr_whose_reader_is_gone_to_stdout():
    """What a killed ``accelerate launch`` leaves its worker: stderr, a pipe it teed, with no reader."""
    script = (
        "import os, signal, sys\n"
        "from trainer.preemption import StopRequest\n"
        "stop = StopRequest()\n"
        "r, w = os.pipe(); os.dup2(w, 2); os.close(r)\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n"
        "print('after the signal', file=sys.stderr, flush=True)\n"
        "print('stopped:', stop.requested(), flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["after the signal", "stopped: True"]


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper that may not be ours."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.is_file() else []


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's prctl")
def test_signalling_the_launcher_stops_its_worker_cleanly(tiny_bert, pairs, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", *recipe_args(tiny_bert, out, pairs)]
    # Files, not pipes: the worker inherits them, and a pipe would stay open as long as it lives.
    log = (tmp_path / "launcher.log").open("w")
    launcher = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    deadline = time.monotonic() + 120
    while not children(launcher.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    (worker,) = children(launcher.pid)
    time.sleep(1.0)
    launcher.send_signal(signal.SIGUSR1)  # its default action: the launcher dies, the worker would run on orphaned
    assert launcher.wait(timeout=60) == -signal.SIGUSR1
    deadline = time.monotonic() + 300
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive(worker), "the worker outlived its launcher"
    assert "stopped at step 1 on request" in (tmp_path / "launcher.log").read_text()
    assert (out / "checkpoints" / "latest").read_text() == "step-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_dead_peer_ends_the_job_in_seconds_with_one_line_and_it_resumes(tiny_bert, pairs, tmp_path):  # noqa: F811
    """Two "nodes" (launchers) on this machine; kill -9 node 1's worker mid-training."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    port = free_port()
    args = [*recipe_args(tiny_bert, out, pairs), "train.batch_size=4", "train.max_steps=12", "train.checkpoint_every=2"]
    launchers, logs = [], []
    for rank in (0, 1):
        logs.append(tmp_path / f"node{rank}.log")
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
               "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no", *args]
        launchers.append(subprocess.Popen(cmd, stdout=logs[-1].open("w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT))
    deadline = time.monotonic() + 300
    log = out / "log.jsonl"
    while not (log.is_file() and '"step": 3,' in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    (worker,) = children(launchers[1].pid)
    os.kill(worker, signal.SIGKILL)
    killed = time.monotonic()
    for launcher in launchers:
        assert launcher.wait(timeout=120) != 0
    assert time.monotonic() - killed < 60  # not the collective timeout: gloo sees the closed connection
    text = logs[0].read_text()
    assert "lost contact with another process" in text and "resume_from_checkpoint=latest" in text
    assert "Connection reset by peer" not in text  # the worker's own line, not gloo's traceback

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no",
           *args, "resume_from_checkpoint=latest"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [json.loads(line)["step"] for line in log.read_text().splitlines() if "loss" in line] == list(range(1, 13))
