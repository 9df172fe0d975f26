import pytest
import torch

from models.layers import FastDropout, TransformerBlock, attention_blocked, fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_fast_dropout_drops_at_the_quantised_rate_and_preserves_the_mean(p):
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = fast_dropout(x, p, training=True)
    dropped = float((y == 0).float().mean())
    assert dropped == pytest.approx(round(p * 256) / 256, abs=0.004)
    assert float(y.mean()) == pytest.approx(1.0, abs=0.01)
    values = torch.unique(y)
    assert len(values) == 2 and float(values[0]) == 0.0
    assert float(values[1]) == pytest.approx(256 / (256 - round(p * 256)), rel=1e-6)


def test_fast_dropout_is_identity_in_eval_and_reproducible_under_a_seed():
    x = torch.randn(64, 50, 8)
    module = FastDropout(0.5).eval()
    assert torch.equal(module(x), x)
    module.train()
    torch.manual_seed(3)
    a = module(x)
    torch.manual_seed(3)
    assert torch.equal(module(x), a)


def test_fast_dropout_passes_gradients_only_through_kept_elements():
    x = torch.randn(1000, requires_grad=True)
    torch.manual_seed(1)
    y = fast_dropout(x, 0.5, training=True)
    y.sum().backward()
    assert torch.equal(x.grad == 0, y.detach() == 0)


def test_transformer_block_attention_ignores_blocked_keys():
    torch.manual_seed(0)
    block = TransformerBlock(16, 2, 32, 0.0, 0.0, 1e-12).eval()
    x = torch.randn(2, 5, 16)
    pad = torch.tensor([[True, True, False, False, False]] * 2)
    blocked = attention_blocked(pad, causal=True)
    out = block(x, blocked)
    x2 = x.clone()
    x2[:, :2] = torch.randn(2, 2, 16)  # change only the padding slots
    x2[:, 4] = torch.randn(2, 16)  # and the future of slot 3
    out2 = block(x2, blocked)
    assert torch.allclose(out[:, 2:4], out2[:, 2:4], atol=1e-6)
