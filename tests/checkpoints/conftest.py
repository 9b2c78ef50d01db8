"""Fixtures shared by the checkpoint tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def trained():
    """A small module with a BatchNorm (buffers that change in the forward pass) and an Adam that stepped once
    (its moments exist)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.BatchNorm1d(256), torch.nn.Linear(256, 8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(torch.randn(16, 64)).pow(2).mean().backward()
    opt.step()
    return model, opt
