"""The device a job runs on: one GPU per parallel worker, kept for the worker's later jobs."""

from __future__ import annotations

import pytest

from bespoke_exp.generate import pipeline


@pytest.mark.parametrize(
    ("job_num", "gpus", "expected"),
    [(0, 4, 0), (3, 4, 3), (5, 4, 1), (2, 1, None), (2, 0, None)],
)
def test_worker_gpu_index(job_num, gpus, expected) -> None:
    assert pipeline.worker_gpu_index(job_num, gpus) == expected


def test_a_worker_pins_one_gpu_and_keeps_it(monkeypatch) -> None:
    chosen = []
    monkeypatch.setattr(pipeline, "_PINNED_CUDA", None)
    monkeypatch.setattr(pipeline.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(pipeline.torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(pipeline.torch.cuda, "set_device", chosen.append)
    assert pipeline.pin_worker_device(6) == "cuda:2"
    # Its next job keeps the GPU its cached pipeline lives on.
    assert pipeline.pin_worker_device(7) == "cuda:2"
    assert chosen == [2]
    assert pipeline.resolve_device("auto") == "cuda:2"
    assert pipeline.resolve_device("cuda") == "cuda:2"
    assert pipeline.resolve_device("cuda:0") == "cuda:0"  # an explicit choice is left alone
    assert pipeline.resolve_device("cpu") == "cpu"


def test_one_visible_gpu_is_not_renamed(monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "_PINNED_CUDA", None)
    monkeypatch.setattr(pipeline.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(pipeline.torch.cuda, "device_count", lambda: 1)
    assert pipeline.pin_worker_device(3) is None
    assert pipeline.resolve_device("auto") == "cuda"
