"""eval.metrics against pytrec_eval (trec_eval) and against values worked out by hand."""
import numpy as np
import pytest
import pytrec_eval

from eval import metrics

pytestmark = [pytest.mark.fast]

CUTOFFS = (1, 3, 10)
# our name -> trec_eval measure name pattern
TREC = {"p": "P_{k}", "r": "recall_{k}", "acc": "success_{k}", "ndcg": "ndcg_cut_{k}",
        "map": "map_cut_{k}"}


def _trec(ranked, qrels, measures):
  """pytrec_eval on our ranking; scores strictly decrease with our position so
  trec_eval's own tie rule (docno order) never applies."""
  run = {f"q{q}": {f"d{d}": float(len(row) - pos) for pos, d in enumerate(row) if d >= 0}
         for q, row in enumerate(ranked)}
  trec_qrels = {f"q{q}": {f"d{d}": int(g) for d, g in j.items()} or {"none": 0}
                for q, j in enumerate(qrels)}
  return pytrec_eval.RelevanceEvaluator(trec_qrels, measures).evaluate(run)


def _rank_by_score(scores):
  """Full ranking by (-score, index): the tie rule of eval.search."""
  index = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
  return np.lexsort((index, -scores), axis=-1)


def _random_case(seed, n_queries=40, n_docs=60):
  rng = np.random.default_rng(seed)
  scores = rng.integers(0, 8, size=(n_queries, n_docs)).astype(float)  # many ties
  qrels = []
  for _ in range(n_queries):
    n_judged = rng.integers(1, 8)
    docs = rng.choice(n_docs, size=n_judged, replace=False)
    qrels.append({int(d): int(rng.integers(0, 4)) for d in docs})  # grades 0..3
  qrels[0] = {int(rng.integers(n_docs)): 3}  # at least one single-relevant query
  return _rank_by_score(scores), qrels


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("depth", [60, 12])  # full ranking, and a truncated run
def test_cutoff_metrics_match_trec_eval(seed, depth):
  ranked, qrels = _random_case(seed)
  ranked = ranked[:, :depth]
  measures = {f"{m}.{','.join(map(str, CUTOFFS))}"
              for m in ("P", "recall", "success", "ndcg_cut", "map_cut")}
  trec = _trec(ranked, qrels, measures)
  has_relevant = [q for q, j in enumerate(qrels) if any(g >= 1 for g in j.values())]
  assert len(has_relevant) > 20
  compared = 0
  for ours, pattern in TREC.items():
    for k in CUTOFFS:
      values = metrics.compute([f"{ours}@{k}"], ranked, qrels)[f"{ours}@{k}"]
      for q in has_relevant:
        assert values[q] == pytest.approx(trec[f"q{q}"][pattern.format(k=k)], abs=1e-12), (ours, k, q)
        compared += 1
  assert compared == len(TREC) * len(CUTOFFS) * len(has_relevant)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("k", [1, 5, 10])
def test_mrr_at_k_matches_trec_recip_rank_of_truncated_run(seed, k):
  ranked, qrels = _random_case(seed)
  trec = _trec(ranked[:, :k], qrels, {"recip_rank"})
  ours = metrics.mrr_at(ranked, qrels, k)
  for q, j in enumerate(qrels):
    if any(g >= 1 for g in j.values()):
      assert ours[q] == pytest.approx(trec[f"q{q}"]["recip_rank"], abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_map_from_ranks_matches_trec_map(seed):
  ranked, qrels = _random_case(seed)
  position = np.argsort(ranked, axis=1) + 1  # 1-based rank of every doc
  targets = metrics.qrels_targets(qrels)  # [Q, T], -1 padded
  ranks = np.where(targets >= 0, np.take_along_axis(position, np.maximum(targets, 0), 1), 0)
  ours = metrics.compute(["map"], ranked, qrels, ranks=ranks)["map"]
  trec = _trec(ranked, qrels, {"map"})
  for q, j in enumerate(qrels):
    if any(g >= 1 for g in j.values()):
      assert ours[q] == pytest.approx(trec[f"q{q}"]["map"], abs=1e-12)
  # map over the full ranking equals map@N
  np.testing.assert_allclose(ours, metrics.average_precision_at(ranked, qrels, ranked.shape[1]))


def test_hand_computed_example():
  # ranking d3 d1 d2 d0; relevant d0 (grade 2) and d1 (grade 1); d5 judged 0.
  ranked = np.array([[3, 1, 2, 0]])
  qrels = [{0: 2, 1: 1, 5: 0}]
  got = metrics.compute(["p@1", "p@3", "r@3", "acc@1", "acc@3", "mrr@10", "map@3", "ndcg@3",
                         "ndcg@4"], ranked, qrels)
  assert got["p@1"][0] == 0 and got["p@3"][0] == pytest.approx(1 / 3)
  assert got["r@3"][0] == pytest.approx(0.5)
  assert got["acc@1"][0] == 0 and got["acc@3"][0] == 1
  assert got["mrr@10"][0] == pytest.approx(0.5)
  assert got["map@3"][0] == pytest.approx((1 / 2) / 2)
  idcg = 2 + 1 / np.log2(3)
  assert got["ndcg@3"][0] == pytest.approx((1 / np.log2(3)) / idcg)
  assert got["ndcg@4"][0] == pytest.approx((1 / np.log2(3) + 2 / np.log2(5)) / idcg)
  # full AP: relevant at ranks 2 and 4 -> (1/2 + 2/4) / 2
  assert metrics.average_precision_from_ranks(np.array([[4, 2, 0]]))[0] == pytest.approx(0.5)


# Hand-made runs: scores over 6 documents with ties (broken by lower index, the
# rule of eval.search), queries with several relevant items and graded qrels.
HAND_SCORES = np.array([
    [0.1, 0.5, 0.3, 0.9, 0.05, 0.0],  # test_hand_computed_example, ranked on: 3 1 2 0 4 5
    [0.5, 0.5, 0.5, 0.2, 0.1, 0.0],   # relevant docs inside a three-way tie at the top
    [0.2, 0.9, 0.9, 0.9, 0.0, 0.0],   # relevant doc last of a tie; another in a tie at the bottom
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],   # everything tied: index order
    [0.3, 0.1, 0.7, 0.2, 0.6, 0.4],   # one relevant item, no ties
    [0.4, 0.4, 0.8, 0.1, 0.8, 0.4],   # four relevant items, grades 1..3, ties of two and three
])
HAND_QRELS = [
    {0: 2, 1: 1, 5: 0},
    {1: 1, 2: 2},
    {3: 1, 5: 3},
    {0: 1, 5: 2, 2: 0},
    {4: 3},
    {0: 1, 1: 2, 3: 3, 4: 1, 2: 0},
]
HAND_RANKED = np.array([
    [3, 1, 2, 0, 4, 5],
    [0, 1, 2, 3, 4, 5],
    [1, 2, 3, 0, 4, 5],
    [0, 1, 2, 3, 4, 5],
    [2, 4, 5, 0, 3, 1],
    [2, 4, 0, 1, 5, 3],
])


def _trec_on_scores(scores, qrels, measures):
  """pytrec_eval on the raw (tied) scores: trec_eval ranks them itself, ties by
  docno descending, so docnos count down with our index to mean "lower index first"."""
  n = scores.shape[1]
  docno = lambda d: f"d{n - 1 - d:03d}"  # noqa: E731
  run = {f"q{q}": {docno(d): float(s) for d, s in enumerate(row)} for q, row in enumerate(scores)}
  trec_qrels = {f"q{q}": {docno(d): int(g) for d, g in j.items()} for q, j in enumerate(qrels)}
  return pytrec_eval.RelevanceEvaluator(trec_qrels, measures).evaluate(run)


def test_hand_made_runs_with_ties_match_trec_eval():
  # Our tie rule gives the hand-worked rankings.
  np.testing.assert_array_equal(_rank_by_score(HAND_SCORES), HAND_RANKED)
  cutoffs = (1, 2, 3, 5, 10)  # 10 > the 6 documents
  measures = {f"{m}.{','.join(map(str, cutoffs))}"
              for m in ("P", "recall", "success", "ndcg_cut", "map_cut")} | {"map", "recip_rank"}
  position = np.argsort(HAND_RANKED, axis=1) + 1
  targets = metrics.qrels_targets(HAND_QRELS)
  ranks = np.where(targets >= 0, np.take_along_axis(position, np.maximum(targets, 0), 1), 0)
  for depth in (6, 3):  # the full ranking, and a run truncated to the top 3
    ranked = HAND_RANKED[:, :depth]
    # trec_eval twice: on our ranking (ties already broken) and on the tied scores themselves
    by_rank = _trec(ranked, HAND_QRELS, measures)
    if depth == 6:
      assert _trec_on_scores(HAND_SCORES, HAND_QRELS, measures) == by_rank
    compared = 0
    for ours, pattern in TREC.items():
      for k in cutoffs:
        values = metrics.compute([f"{ours}@{k}"], ranked, HAND_QRELS)[f"{ours}@{k}"]
        for q in range(len(HAND_QRELS)):
          assert values[q] == pytest.approx(by_rank[f"q{q}"][pattern.format(k=k)], abs=1e-12), (
              ours, k, q, depth)
          compared += 1
    assert compared == len(TREC) * len(cutoffs) * len(HAND_QRELS)
    mrr = metrics.mrr_at(ranked, HAND_QRELS, depth)
    for q in range(len(HAND_QRELS)):
      assert mrr[q] == pytest.approx(by_rank[f"q{q}"]["recip_rank"], abs=1e-12)
  # full MAP from every relevant item's rank (the full ranking reaches them all)
  full = _trec(HAND_RANKED, HAND_QRELS, {"map"})
  ours = metrics.compute(["map"], HAND_RANKED, HAND_QRELS, ranks=ranks)["map"]
  for q in range(len(HAND_QRELS)):
    assert ours[q] == pytest.approx(full[f"q{q}"]["map"], abs=1e-12)
  # spot values worked by hand, so trec_eval is not the only judge here
  got = metrics.compute(["map@6", "ndcg@3", "r@2", "mrr@10"], HAND_RANKED, HAND_QRELS)
  assert got["map@6"][2] == pytest.approx((1 / 3 + 2 / 6) / 2)        # ranks 3 and 6
  assert got["ndcg@3"][1] == pytest.approx((1 / np.log2(3) + 2 / 2) / (2 + 1 / np.log2(3)))
  assert got["r@2"][5] == pytest.approx(1 / 4)                          # doc 4 at rank 2
  assert got["mrr@10"][3] == pytest.approx(1.0)                         # doc 0 first in the tie
  assert got["map@6"][5] == pytest.approx((1 / 2 + 2 / 3 + 3 / 4 + 4 / 6) / 4)


def test_query_without_relevant_items_scores_zero_and_padding_is_ignored():
  ranked = np.array([[0, 1, -1], [2, 0, 1]])
  qrels = [{}, {1: 1}]
  got = metrics.compute(["r@2", "ndcg@3", "mrr@3", "map@3"], ranked, qrels)
  for values in got.values():
    assert values[0] == 0
  assert got["mrr@3"][1] == pytest.approx(1 / 3)


def test_unknown_metric_and_missing_ranks_are_clear_errors():
  with pytest.raises(ValueError, match="unknown metric"):
    metrics.compute(["recall10"], np.zeros((1, 1), int), [{0: 1}])
  with pytest.raises(ValueError, match="needs the ranks"):
    metrics.compute(["map"], np.zeros((1, 1), int), [{0: 1}])
