"""Device resolution."""

from __future__ import annotations

import pytest
import torch

from worldflux.core.device import resolve_device
from worldflux.core.errors import ConfigError


def _no_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None:
        monkeypatch.setattr(mps, "is_available", lambda: False)


def test_auto_falls_back_to_cpu(monkeypatch):
    _no_accelerators(monkeypatch)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")


def test_auto_prefers_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_explicit_devices_pass_through():
    assert resolve_device("cpu") == torch.device("cpu")
    device = torch.device("cpu")
    assert resolve_device(device) is device


def test_cuda_without_cuda_is_a_config_error(monkeypatch):
    _no_accelerators(monkeypatch)
    with pytest.raises(ConfigError, match=r"device: got 'cuda:1'.*CUDA is not available"):
        resolve_device("cuda:1")


def test_unknown_device_names_the_value():
    with pytest.raises(ConfigError, match=r"device: got 'gpu0', expected 'auto', 'cpu'"):
        resolve_device("gpu0")
