"""eval.metrics against pytrec_eval (trec_eval) and against values worked out by hand."""
import numpy as np
import pytest
import pytrec_eval

from eval import metrics

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
