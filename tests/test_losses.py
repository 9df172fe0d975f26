"""The blocked item cross-entropy equals the plain full-softmax CE, values and gradients."""
import pytest
import torch
import torch.nn.functional as F

from models.losses import item_cross_entropy


def _plain(states, table, targets, bias):
    z = states @ table.T + (bias if bias is not None else 0.0)
    z[:, 0] = float("-inf")  # padding is never a class
    return F.cross_entropy(z, targets, reduction="none")


@pytest.mark.parametrize("store_limit", [0, 10**9], ids=["recompute", "stored-softmax"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_blocked_cross_entropy_matches_plain_values_and_gradients(with_bias, store_limit):
    torch.manual_seed(0)
    M, N, h = 300, 57, 8  # 300 rows: two full blocks of 128 and a ragged one
    table = torch.randn(N + 1, h, dtype=torch.float64).float().requires_grad_()
    bias = torch.randn(N + 1).requires_grad_() if with_bias else None
    states = torch.randn(M, h, requires_grad=True)
    targets = torch.randint(1, N + 1, (M,))
    weights = torch.rand(M)  # non-uniform upstream gradient, as sample weights give
    params = [states, table] + ([bias] if with_bias else [])

    got = item_cross_entropy(states, table, targets, bias, store_limit=store_limit)
    got_grads = torch.autograd.grad((got * weights).sum(), params)
    want = _plain(states, table, targets, bias)
    want_grads = torch.autograd.grad((want * weights).sum(), params)

    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    assert got_grads[1][0].abs().max() == 0  # the padding row gets no gradient


def test_small_inputs_take_the_plain_path_with_the_same_result():
    torch.manual_seed(1)
    table, states = torch.randn(11, 4), torch.randn(5, 4)
    targets = torch.tensor([1, 3, 10, 2, 2])
    torch.testing.assert_close(item_cross_entropy(states, table, targets), _plain(states, table, targets, None))


def test_a_second_backward_through_the_stored_softmax_is_refused():
    states = torch.randn(300, 4, requires_grad=True)
    table, targets = torch.randn(21, 4), torch.randint(1, 21, (300,))
    loss = item_cross_entropy(states, table, targets).sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):  # never silently wrong
        loss.backward()
    loss = item_cross_entropy(states, table, targets, store_limit=0).sum()
    loss.backward(retain_graph=True)
    loss.backward()  # recomputing path: repeatable
