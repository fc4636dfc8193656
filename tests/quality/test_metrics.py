"""Metrics on rankings whose figures are worked out by hand in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from bench.quality.metrics import MetricTotals, average_precision, map_at_r, recall_at, relevant_ranks


def test_hits_at_first_and_third_place() -> None:
    # Gallery order 3, 0, 4, 1, 2; hits {3, 4}: found at ranks 0 and 2 (0-based).
    ranks = relevant_ranks([3, 0, 4, 1, 2], {3, 4})
    assert ranks.tolist() == [0, 2]
    assert recall_at(ranks, 1) == 1.0
    # mAP@R, R = 2: position 1 is a hit (precision 1/1), position 2 is not; (1/1 + 0) / 2.
    assert map_at_r(ranks, 2) == pytest.approx(0.5)
    # revisitop AP: hit 0 at rank 0 -> (1 + 1/1)/2 = 1; hit 1 at rank 2 -> (1/2 + 2/3)/2 = 7/12;
    # (1 + 7/12) / 2 = 19/24. (Non-interpolated AP would give (1 + 2/3)/2 = 5/6.)
    assert average_precision(ranks, 2) == pytest.approx(19 / 24)


def test_ignored_images_are_taken_out_of_the_ranking() -> None:
    # Order 5, 0, 3, 6, 4 with 5 and 6 ignored leaves 0, 3, 4: hits {3, 4} at ranks 1 and 2.
    ranks = relevant_ranks([5, 0, 3, 6, 4], {3, 4}, {5, 6})
    assert ranks.tolist() == [1, 2]
    assert recall_at(ranks, 1) == 0.0
    assert recall_at(ranks, 2) == 1.0
    # mAP@R, R = 2: position 1 misses, position 2 hits with precision 1/2; (0 + 1/2) / 2 = 1/4.
    assert map_at_r(ranks, 2) == pytest.approx(0.25)
    # AP: rank 1 -> (0/1 + 1/2)/2 = 1/4; rank 2 -> (1/2 + 2/3)/2 = 7/12; (1/4 + 7/12)/2 = 5/12.
    assert average_precision(ranks, 2) == pytest.approx(5 / 12)


def test_hits_beyond_a_truncated_ranking_count_as_missed() -> None:
    # Only two gallery images ranked: 0 then 7. Hits {7, 9}; 9 never shows.
    ranks = relevant_ranks([0, 7], {7, 9})
    assert ranks.tolist() == [1]
    # AP: rank 1 -> (0 + 1/2)/2 = 1/4, divided by all 2 hits: 1/8.
    assert average_precision(ranks, 2) == pytest.approx(1 / 8)
    # mAP@R, R = 2: position 2 hits with precision 1/2; (0 + 1/2) / 2 = 1/4.
    assert map_at_r(ranks, 2) == pytest.approx(0.25)


def test_perfect_ranking_scores_one() -> None:
    ranks = relevant_ranks(np.array([2, 1, 0]), {1, 2})
    # mAP@R: (1/1 + 2/2) / 2 = 1. AP: rank 0 -> 1; rank 1 -> (1/1 + 2/2)/2 = 1; 2/2 = 1.
    assert map_at_r(ranks, 2) == pytest.approx(1.0)
    assert average_precision(ranks, 2) == pytest.approx(1.0)


def test_means_leave_out_queries_without_hits() -> None:
    totals = MetricTotals(ks=(1, 5))
    totals.add(np.array([3, 0, 4, 1, 2]), frozenset({3, 4}), frozenset())  # R@1 1, mAP@R 1/2, AP 19/24
    totals.add(np.array([5, 0, 3, 6, 4]), frozenset({3, 4}), frozenset({5, 6}))  # R@1 0, mAP@R 1/4, AP 5/12
    totals.add(np.array([0, 1]), frozenset({1}), frozenset({1}))  # its only hit is ignored: no hits
    summary = totals.summary()
    assert summary["queries"] == 2
    assert summary["queries_without_relevant"] == 1
    assert summary["recall@1"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert summary["recall@5"] == pytest.approx(1.0)
    assert summary["map@r"] == pytest.approx(0.375)  # (1/2 + 1/4) / 2
    assert summary["map"] == pytest.approx((19 / 24 + 5 / 12) / 2)  # 29/48


def test_no_queries_give_no_figures_rather_than_zero() -> None:
    summary = MetricTotals(ks=(1,)).summary()
    assert summary["recall@1"] is None and summary["map"] is None and summary["queries"] == 0
