"""gzmorph.metrics: the one masked squared error, the same in numpy and in torch."""

import numpy as np
import torch

from gzmorph.metrics import masked_mse, masked_rmse, masked_sums, rmse_from_sums


def test_nan_labels_are_left_out_never_counted_as_zero():
    pred = np.array([[0.2, 0.9], [0.4, 0.5]])
    target = np.array([[0.0, np.nan], [0.4, np.nan]])
    sse, count = masked_sums(pred, target)
    assert count == 2 and np.isclose(sse, 0.04)
    assert np.isclose(masked_rmse(pred, target), np.sqrt(0.02))
    per_column = masked_rmse(pred, target, axis=0)
    assert np.isclose(per_column[0], np.sqrt(0.02)) and np.isnan(per_column[1])  # nothing labelled: NaN


def test_numpy_and_torch_agree_and_the_loss_is_differentiable():
    rng = np.random.default_rng(0)
    pred, target = rng.random((5, 4)), rng.random((5, 4))
    target[rng.random((5, 4)) < 0.3] = np.nan
    sse_np, count_np = masked_sums(pred, target, axis=1)
    sse_t, count_t = masked_sums(torch.tensor(pred, dtype=torch.float32), torch.tensor(target, dtype=torch.float32),
                                 axis=1)
    np.testing.assert_allclose(sse_t.numpy(), sse_np, rtol=1e-5)
    np.testing.assert_array_equal(count_t.numpy(), count_np)
    p = torch.tensor(pred, dtype=torch.float32, requires_grad=True)
    loss = masked_mse(p, torch.tensor(target, dtype=torch.float32))
    loss.backward()
    assert torch.isclose(loss, torch.tensor(float(np.nansum((pred - target) ** 2) / (~np.isnan(target)).sum())))
    assert (p.grad[torch.isnan(torch.tensor(target))] == 0).all()  # no gradient from missing labels


def test_rmse_from_sums_of_nothing():
    assert np.isnan(rmse_from_sums(0.0, 0))
    assert float(rmse_from_sums(torch.tensor(0.0), torch.tensor(0))) == 0.0  # torch: count clamped to 1
