"""The optimiser CaptioningModule builds: torch's fused AdamW wherever it may run, and its
update checked against AdamW's definition computed in float64."""

from types import SimpleNamespace

import pytest
import torch

from capgen.lightning.objective import ObjectiveSettings
from capgen.lightning.optimization import OptimizerSettings, SchedulerSettings, configure_optimizers
from capgen.models import Captioner, LSTMDecoder, SmallCNN


def _net(dtype=torch.float32) -> Captioner:
    torch.manual_seed(0)
    decoder = lambda **kw: LSTMDecoder(**kw, embed_dim=5, hidden_dim=7, dropout=0.0)  # noqa: E731
    return Captioner(SmallCNN(widths=(4, 6), grid=2), decoder, vocab_size=9).to(dtype)  # the encoder trains too


def _configure(net, precision: str):
    trainer = SimpleNamespace(precision=precision, estimated_stepping_batches=10)
    out = configure_optimizers(net, trainer, OptimizerSettings(), SchedulerSettings(name="none"), ObjectiveSettings())
    return out if isinstance(out, torch.optim.Optimizer) else out["optimizer"]


@pytest.mark.parametrize("precision, fused", [("32-true", True), ("64-true", True), ("bf16-mixed", False), ("16-mixed", False)])
def test_adamw_is_fused_unless_lightning_runs_mixed_precision(precision, fused):
    optimizer = _configure(_net(), precision)
    assert bool(optimizer.defaults["fused"]) is fused
    assert all(bool(g["fused"]) is fused for g in optimizer.param_groups)


def test_a_fused_step_is_adamw_by_its_definition_in_float64():
    net = _net(torch.float64)
    optimizer = OptimizerSettings(lr=1e-2, encoder_lr=3e-3, weight_decay=0.1).build(net)
    assert optimizer.defaults["fused"]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    lrs = [g["lr"] for g in optimizer.param_groups for _ in g["params"]]
    expected = [p.detach().clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    b1, b2, eps, decay = 0.9, 0.999, 1e-8, 0.1
    g = torch.Generator().manual_seed(1)
    for step in (1, 2, 3):
        for i, p in enumerate(params):
            p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64)
            # AdamW (Loshchilov & Hutter): decoupled decay, then the bias-corrected Adam step
            expected[i] = expected[i] * (1 - lrs[i] * decay)
            m[i] = b1 * m[i] + (1 - b1) * p.grad
            v[i] = b2 * v[i] + (1 - b2) * p.grad**2
            m_hat, v_hat = m[i] / (1 - b1**step), v[i] / (1 - b2**step)
            expected[i] = expected[i] - lrs[i] * m_hat / (v_hat.sqrt() + eps)
        optimizer.step()
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-14)
