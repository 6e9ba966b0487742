"""Unit 4's data: the generated ratings have MovieLens 100K's shape, d2l's reader and splits work on a file in
MovieLens' format, and the implicit leave-one-out split holds out each user's latest interaction."""

from dataclasses import fields

import torch

from autograder.checklib.ratings import (
    implicit_leave_one_out, popularity_scores, rating_matrix, read_data_ml100k, split_data_ml100k,
    _drawn, synthetic_ratings,
)


def test_generated_ratings_have_movielens_100k_shape():
    """943 users, 1682 items, 100 000 ratings in 1..5, at least 20 per user, a long tail of item popularity,
    no (user, item) pair twice, and a noise level between a perfect fit and the global mean?"""
    data = synthetic_ratings(seed=3)
    assert (data.num_users, data.num_items) == (943, 1682) and abs(len(data) - 100_000) <= 100
    assert set(data.rating.unique().tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert torch.bincount(data.user, minlength=943).min() >= 20
    pairs = data.user * data.num_items + data.item
    assert len(pairs.unique()) == len(pairs)
    per_item = torch.bincount(data.item, minlength=data.num_items).sort(descending=True).values
    assert per_item[:17].sum() > 0.08 * len(data) and per_item[: data.num_items // 2].sum() > 0.8 * len(data)
    global_rmse = float(((data.rating - data.rating.mean()) ** 2).mean().sqrt())
    assert 0.3 < data.noise_rmse() < global_rmse - 0.2


def test_generated_ratings_are_reproducible_and_seeded():
    """Does the same seed give the same data, drawn afresh (not from the kept draws), and another seed other data?"""
    _drawn.cache_clear()
    a = synthetic_ratings(seed=1)
    _drawn.cache_clear()
    b, c = synthetic_ratings(seed=1), synthetic_ratings(seed=2)
    assert torch.equal(a.user, b.user) and torch.equal(a.rating, b.rating)
    assert not (len(a) == len(c) and torch.equal(a.item, c.item))


def test_a_kept_draw_comes_back_as_a_copy_the_caller_can_change():
    """Repeated draws are kept (`_drawn`), yet each call gets its own tensors: changing every tensor of one call's
    data in place leaves the next call's as drawn."""
    _drawn.cache_clear()
    first = synthetic_ratings(seed=5)
    tensors = [f.name for f in fields(first) if isinstance(getattr(first, f.name), torch.Tensor)]
    assert set(tensors) == {"user", "item", "rating", "timestamp", "expected"}
    for name in tensors:
        getattr(first, name).zero_()
    again = synthetic_ratings(seed=5)
    assert _drawn.cache_info().hits == 1
    assert again.rating.min() >= 1.0 and again.expected.min() >= 1.0 and again.user.max() > 0
    assert again.item.max() > 0 and again.timestamp.min() > 0


def test_reader_and_splits_on_a_file_in_movielens_format(tmp_path):
    """Does `read_data_ml100k` read `u.data` (ids from 1, tab-separated) into 0-based ids, and do d2l's random and
    seq-aware splits partition it (the latter holding out each user's latest rating)?"""
    rows = [(1, 10, 5, 300), (1, 3, 4, 100), (2, 3, 1, 50), (2, 7, 3, 400), (2, 1, 2, 200), (3, 10, 4, 10)]
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-100k" / "u.data").write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))
    data = read_data_ml100k(tmp_path / "ml-100k")
    assert (data.num_users, data.num_items, len(data)) == (3, 10, 6)
    assert data.user.tolist() == [0, 0, 1, 1, 1, 2] and data.item.tolist() == [9, 2, 2, 6, 0, 9]
    assert data.rating.tolist() == [5, 4, 1, 3, 2, 4]

    train, test = split_data_ml100k(data, split_mode="seq-aware")
    assert sorted(zip(test.user.tolist(), test.item.tolist())) == [(0, 9), (1, 6), (2, 9)]
    assert len(train) == 3
    train, test = split_data_ml100k(data, split_mode="random", test_ratio=0.5, seed=0)
    together = sorted(zip((train.user * 10 + train.item).tolist() + (test.user * 10 + test.item).tolist()))
    assert together == sorted(zip((data.user * 10 + data.item).tolist()))

    R, mask = rating_matrix(data)
    assert R.shape == (3, 10) and int(mask.sum()) == 6 and R[1, 6] == 3


def test_a_file_in_another_format_gets_a_clear_error(tmp_path):
    """Does a file that is not `u.data` raise a ValueError that says what format was expected?"""
    (tmp_path / "u.data").write_text("user,item,rating\n1,2,3\n")
    try:
        read_data_ml100k(tmp_path / "u.data")
    except ValueError as exc:
        assert "u.data format" in str(exc)
    else:
        raise AssertionError("no error")


def test_implicit_leave_one_out_and_the_popularity_baseline():
    """Is every user's held-out item their latest interaction, never among the items seen in training, and does
    the popularity baseline score items by their training counts?"""
    data = synthetic_ratings(num_users=50, num_items=80, num_ratings=1500, seed=0)
    implicit = implicit_leave_one_out(data)
    assert implicit.test_item.shape == (50,) and implicit.seen.shape == (50, 80)
    assert not implicit.seen[torch.arange(50), implicit.test_item].any()
    assert int(implicit.seen.sum()) + 50 == len(data)
    for u in (0, 17, 49):
        mine = data.subset(data.user == u)
        assert implicit.test_item[u] == mine.item[mine.timestamp.argmax()]
    scores = popularity_scores(implicit)
    assert torch.equal(scores[0], torch.bincount(implicit.train_item, minlength=80).double())
