import numpy as np
import torch

from benchmark.metrics import FullRankingMetrics, mask_history, target_ranks


def brute_force(scores: np.ndarray, targets: np.ndarray, ks, optimistic=False):
    out = {}
    ranks = []
    for row, y in zip(scores, targets):
        others = np.delete(np.arange(1, len(row)), y - 1)  # real items except the target
        higher = (row[others] > row[y]).sum()
        ties = (row[others] == row[y]).sum()
        ranks.append(1 + higher + (0 if optimistic else ties))
    ranks = np.array(ranks, dtype=float)
    for k in ks:
        hit = ranks <= k
        out[f"hr@{k}"] = hit.mean()
        out[f"ndcg@{k}"] = (hit / np.log2(ranks + 1)).mean()
        out[f"mrr@{k}"] = (hit / ranks).mean()
    return out


def test_metrics_equal_numpy_reference_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(200, 31)).astype(np.float32)  # many ties
    targets = rng.integers(1, 31, size=200)
    t = torch.from_numpy(scores.copy())
    t[:, 0] = float("-inf")
    for optimistic in (False, True):
        metric = FullRankingMetrics((5, 10, 20), optimistic=optimistic)
        metric.update(t[:120], torch.from_numpy(targets[:120]))
        metric.update(t[120:], torch.from_numpy(targets[120:]))
        got = {k: float(v) for k, v in metric.compute().items()}
        want = brute_force(scores, targets, (5, 10, 20), optimistic)
        for key, value in want.items():
            assert abs(got[key] - value) < 1e-6, key


def test_constant_scorer_gets_the_worst_rank():
    scores = torch.zeros(4, 11)
    scores[:, 0] = float("-inf")
    ranks = target_ranks(scores, torch.tensor([1, 3, 5, 10]))
    assert torch.equal(ranks, torch.full((4,), 10.0))


def test_padding_column_never_ranks_above_the_target():
    scores = torch.tensor([[100.0, 0.1, 0.2, 0.3]])
    scores[:, 0] = float("-inf")
    assert target_ranks(scores, torch.tensor([3])).item() == 1.0


def test_mask_history_removes_seen_items_but_keeps_the_target():
    scores = torch.tensor([[float("-inf"), 5.0, 4.0, 3.0, 2.0]])
    history = torch.tensor([[0, 1, 3]])
    out = mask_history(scores.clone(), history, torch.tensor([3]))
    assert out[0, 1] == float("-inf") and out[0, 3] == 3.0
    assert target_ranks(out, torch.tensor([3])).item() == 2.0  # only item 2 (4.0) is above


def test_grouped_metrics_equal_full_metrics_computed_on_each_group_alone():
    from benchmark.metrics import GroupedRankingMetrics

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(40, 31, generator=g)
    scores[:, 0] = float("-inf")
    targets = torch.randint(1, 31, (40,), generator=g)
    groups = torch.randint(-1, 3, (40,), generator=g)  # -1: not counted
    grouped = GroupedRankingMetrics(3, (1, 5))
    grouped.update(target_ranks(scores, targets), groups)
    out = grouped.compute()
    for b in range(3):
        alone = FullRankingMetrics((1, 5))
        rows = groups == b
        alone.update(scores[rows], targets[rows])
        ref = alone.compute()
        assert out[f"n_b{b}"] == rows.sum()
        for key in ("hr@1", "hr@5", "ndcg@5"):
            assert torch.isclose(out[f"{key}_b{b}"], ref[key])


def test_run_reports_test_metrics_per_popularity_bucket_of_the_target_consistent_with_the_overall_ones(tmp_path):
    from benchmark.config import compose
    from benchmark.run import execute

    cfg = compose(backbone="sasrec", denoiser="none", dataset="synthetic", profile="smoke",
                  overrides=["dataset.synthetic.n_users=40", "dataset.synthetic.n_items=30", "dataset.max_len=8"])
    test = execute(cfg, runs_dir=tmp_path).test
    counts = [test[f"n_b{b}"] for b in range(5)]
    assert sum(counts) == 40
    weighted = sum(test[f"ndcg@10_b{b}"] * counts[b] for b in range(5)) / 40
    assert abs(weighted - test["ndcg@10"]) < 1e-6
