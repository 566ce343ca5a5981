"""Run set-up: threads per process on CPU and the mixed-precision choice."""

import os

import pytest
import torch

from trainer.errors import CodetuneError
from trainer.hardware import resolve_precision, use_cpu_threads


def test_cpu_threads_share_the_cores_among_local_processes(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what a plain `accelerate launch` exports
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
        assert use_cpu_threads(None) == os.cpu_count() == torch.get_num_threads()
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(os.cpu_count() * 2))
        assert use_cpu_threads(None) == 1  # never fewer than one
        assert use_cpu_threads(3) == 3 == torch.get_num_threads()
        with pytest.raises(CodetuneError, match="cpu_threads: 0"):
            use_cpu_threads(0)
    finally:
        torch.set_num_threads(before)


def test_mixed_precision_auto_picks_by_hardware(monkeypatch):
    from trainer import hardware

    monkeypatch.setattr(hardware, "bf16_supported", lambda: True)
    assert resolve_precision("auto") == "bf16"
    monkeypatch.setattr(hardware, "bf16_supported", lambda: False)
    assert resolve_precision("auto") == "no"
    assert resolve_precision(None) is None and resolve_precision("fp16") == "fp16"
    with pytest.raises(CodetuneError, match="mixed_precision: expected auto, no, fp16 or bf16, got 'fast'"):
        resolve_precision("fast")


def test_onednn_cache_is_bounded_unless_the_user_set_it(monkeypatch):
    from trainer.hardware import ONEDNN_CACHE_CAPACITY, ONEDNN_CACHE_ENV, bound_onednn_cache

    monkeypatch.delenv(ONEDNN_CACHE_ENV, raising=False)
    bound_onednn_cache()
    assert os.environ[ONEDNN_CACHE_ENV] == str(ONEDNN_CACHE_CAPACITY)
    monkeypatch.setenv(ONEDNN_CACHE_ENV, "256")
    bound_onednn_cache()
    assert os.environ[ONEDNN_CACHE_ENV] == "256"
    # Every torch path that encodes (training, search, evaluation, bench) loads its model through load_model.
    from trainer.models import load_model

    monkeypatch.delenv(ONEDNN_CACHE_ENV)
    load_model("default")
    assert os.environ[ONEDNN_CACHE_ENV] == str(ONEDNN_CACHE_CAPACITY)
