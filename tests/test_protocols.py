"""eval.protocols on small synthetic sets whose answers are worked out by hand.

Candidates are one-hot vectors over the multilingual pool, so a query vector is
simply the list of its scores against the pool (x0 x1 x2 y0 y1 y2): every rank
below can be read off the score lists.
"""
import numpy as np
import pytest
import pytrec_eval

from data_pipelines.readers import Candidate, IssueLog, Question, RetrievalSet
from eval import protocols

pytestmark = [pytest.mark.fast]


def _set(benchmark, language, n_candidates, questions):
  return RetrievalSet(
      benchmark=benchmark, language=language,
      questions=[Question(qid=qid, text=f"{language} {qid}", relevant=rel) for qid, rel in questions],
      candidates=[Candidate(text=f"{language}{i}", context=f"{language}{i}", doc_id=str(i))
                  for i in range(n_candidates)],
      issues=IssueLog())


def _encode(sets, query_scores):
  """One-hot candidates over the pool; query embeddings are their pool scores."""
  sizes = [len(s.candidates) for s in sets]
  eye = np.eye(sum(sizes), dtype=np.float32)
  bounds = np.cumsum([0] + sizes)
  return {s.language: protocols.EncodedSet(s, np.asarray(query_scores[s.language], np.float32),
                                           eye[bounds[j]:bounds[j + 1]])
          for j, s in enumerate(sets)}


# Question A: answers x0 and y2.  Question B: answers x1 and y0.
LAREQA_SCORES = {
    #       x0   x1   x2   y0   y1   y2
    "xx": [[.9, .1, .5, .8, .7, .3],   # A
           [.2, .6, .6, .9, .1, .0]],  # B (x1, x2 tie: x1 has the lower index)
    "yy": [[.4, .3, .2, .1, .6, .5],   # A
           [.1, .2, .3, .4, .5, .6]],  # B
}


def _lareqa_sets(extra_xx_question=False):
  xx_questions = [("A", {0: 1}), ("B", {1: 1})]
  scores = {k: list(v) for k, v in LAREQA_SCORES.items()}
  if extra_xx_question:  # an id with no yy counterpart (like English-only MLQA ids)
    xx_questions.append(("C", {2: 1}))
    scores["xx"].append([.0, .0, .9, .95, .0, .0])
  sets = [_set("xquad_r", "xx", 3, xx_questions),
          _set("xquad_r", "yy", 3, [("A", {2: 1}), ("B", {0: 1})])]
  return _encode(sets, scores)


def test_lareqa_by_hand():
  result = protocols.lareqa(_lareqa_sets())
  s = result["settings"]
  approx = lambda x: pytest.approx(x, abs=1e-12)
  # mono: xx A rank 1, B rank 1 (tie by index); yy A rank 2, B rank 3
  assert s["mono"]["per_language"]["xx"] == {"map": approx(1.0), "r@1": approx(1.0)}
  assert s["mono"]["per_language"]["yy"] == {"map": approx((1 / 2 + 1 / 3) / 2), "r@1": approx(0.0)}
  assert s["mono"]["macro"]["map"] == approx((1 + 5 / 12) / 2)
  # cross: xx->yy A rank 3, B rank 1; yy->xx A rank 1, B rank 2
  assert s["cross"]["per_pair"]["xx-yy"] == {"map": approx((1 / 3 + 1) / 2), "r@1": approx(0.5)}
  assert s["cross"]["per_pair"]["yy-xx"] == {"map": approx((1 + 1 / 2) / 2), "r@1": approx(0.5)}
  assert s["cross"]["macro"]["map"] == approx((2 / 3 + 3 / 4) / 2)
  # multi: answer ranks xx-A (1, 5), xx-B (2, 1), yy-A (3, 2), yy-B (3, 5)
  ap = {"xxA": (1 + 2 / 5) / 2, "xxB": 1.0, "yyA": (1 / 2 + 2 / 3) / 2, "yyB": (1 / 3 + 2 / 5) / 2}
  assert s["multi"]["per_language"]["xx"]["map"] == approx((ap["xxA"] + ap["xxB"]) / 2)
  assert s["multi"]["per_language"]["yy"]["map"] == approx((ap["yyA"] + ap["yyB"]) / 2)
  assert s["multi"]["macro"]["r@10"] == approx(1.0)
  # language bias: spreads xx (4, 1), yy (1, 2)
  bias = result["language_bias"]
  assert bias["per_language"] == {"xx": approx(2.5), "yy": approx(1.5)}
  assert bias["macro"] == approx(2.0)
  assert result["counts"]["pool_candidates"] == 6


def test_lareqa_question_missing_in_one_language():
  result = protocols.lareqa(_lareqa_sets(extra_xx_question=True))
  s = result["settings"]
  # C joins xx mono (rank 1 of x0 x1 x2 = .0 .0 .9) ...
  assert s["mono"]["per_language"]["xx"]["map"] == pytest.approx(1.0)
  # ... but not the xx->yy pair (no answer in yy), which is unchanged
  assert s["cross"]["per_pair"]["xx-yy"]["map"] == pytest.approx((1 / 3 + 1) / 2)
  # in multi its one answer x2 ranks 2nd (after y0 .95); no parallel answer, so no bias
  assert s["multi"]["per_language"]["xx"]["map"] == pytest.approx(((1 + 2 / 5) / 2 + 1 + 1 / 2) / 3)
  assert result["language_bias"]["per_language"]["xx"] == pytest.approx(2.5)
  assert result["language_bias"]["queries_without_parallel_answers"] == {"xx": 1, "yy": 0}


def test_language_bias_uses_each_languages_best_rank():
  ranks = np.array([[4, 9, 2, 0], [7, 0, 0, 0]])
  langs = np.array([[0, 0, 1, 0], [0, 0, 0, 0]])
  got = protocols.language_bias(ranks, langs)
  assert got[0] == 2  # language 0 best 4, language 1 best 2
  assert np.isnan(got[1])


def _brute_ranks(queries, corpus):
  scores = queries.astype(np.float64) @ corpus.T.astype(np.float64)
  index = np.broadcast_to(np.arange(corpus.shape[0]), scores.shape)
  return np.lexsort((index, -scores), axis=-1)  # full ranking


def _random_tydi(seed=0):
  rng = np.random.default_rng(seed)
  sets, emb = [], {}
  for language, n_cand, n_q in (("aa", 17, 9), ("bb", 12, 7), ("cc", 25, 5)):
    questions = [(f"{language}{i}", {int(rng.integers(n_cand)): 1}) for i in range(n_q)]
    sets.append(_set("tydiqa_goldp", language, n_cand, questions))
    emb[language] = (rng.normal(size=(n_q, 6)), rng.normal(size=(n_cand, 6)))
  return {s.language: protocols.EncodedSet(s, emb[s.language][0].astype(np.float32),
                                           emb[s.language][1].astype(np.float32)) for s in sets}


def test_tydi_against_brute_force_and_trec_eval():
  encoded = _random_tydi()
  result = protocols.tydi(encoded, search_options={"chunk_size": 8})
  languages = list(encoded)
  pool = np.concatenate([encoded[l].candidates for l in languages])
  pool_language = np.repeat(np.arange(3), [len(encoded[l].candidates) for l in languages])
  offset = 0
  for j, language in enumerate(languages):
    enc = encoded[language]
    for setting, corpus, shift in (("mono", enc.candidates, 0), ("multi", pool, offset)):
      ranking = _brute_ranks(enc.questions, corpus)
      run = {f"q{q}": {f"d{d}": float(-pos) for pos, d in enumerate(row)} for q, row in enumerate(ranking)}
      qrels = {f"q{q}": {f"d{next(iter(x.relevant)) + shift}": 1} for q, x in enumerate(enc.data.questions)}
      trec = pytrec_eval.RelevanceEvaluator(qrels, {"map", "ndcg_cut.10", "recall.1,10"}).evaluate(run)
      got = result["settings"][setting]["per_language"][language]
      assert got["map"] == pytest.approx(np.mean([t["map"] for t in trec.values()]))
      assert got["ndcg@10"] == pytest.approx(np.mean([t["ndcg_cut_10"] for t in trec.values()]))
      assert got["r@1"] == pytest.approx(np.mean([t["recall_1"] for t in trec.values()]))
      assert got["r@10"] == pytest.approx(np.mean([t["recall_10"] for t in trec.values()]))
      if setting == "multi":
        share = (pool_language[ranking[:, :10]] == j).mean()
        assert got["top10_same_language"] == pytest.approx(share)
        assert 0 < share < 1
    offset += len(enc.candidates)
  assert set(result["settings"]) == {"mono", "multi"}
  macro = result["settings"]["mono"]["macro"]["mrr@10"]
  assert macro == pytest.approx(np.mean([result["settings"]["mono"]["per_language"][l]["mrr@10"]
                                         for l in languages]))


def test_miracl_graded_ndcg_matches_trec_eval():
  rng = np.random.default_rng(3)
  n_cand = 130
  questions = [(f"q{i}", {int(d): int(rng.integers(1, 4)) for d in rng.choice(n_cand, 4, replace=False)})
               for i in range(6)]
  data = _set("miracl", "zz", n_cand, questions)
  q_emb = rng.normal(size=(6, 5)).astype(np.float32)
  c_emb = rng.normal(size=(n_cand, 5)).astype(np.float32)
  result = protocols.miracl({"zz": protocols.EncodedSet(data, q_emb, c_emb)})
  ranking = _brute_ranks(q_emb, c_emb)
  run = {f"q{q}": {f"d{d}": float(-pos) for pos, d in enumerate(row)} for q, row in enumerate(ranking)}
  qrels = {f"q{q}": {f"d{d}": g for d, g in rel.items()} for q, (_, rel) in enumerate(questions)}
  trec = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
  got = result["settings"]["mono"]["per_language"]["zz"]
  assert got["ndcg@10"] == pytest.approx(np.mean([t["ndcg_cut_10"] for t in trec.values()]))
  assert got["r@100"] == pytest.approx(np.mean([t["recall_100"] for t in trec.values()]))


def test_bad_inputs_are_protocol_errors():
  data = _set("xquad_r", "xx", 2, [("A", {0: 1})])
  with pytest.raises(protocols.ProtocolError, match="xquad_r/xx: 1 candidate embeddings for 2"):
    protocols.EncodedSet(data, np.zeros((1, 3)), np.zeros((1, 3)))
  dup = _set("xquad_r", "xx", 2, [("A", {0: 1}), ("A", {1: 1})])
  with pytest.raises(protocols.ProtocolError, match="question id A appears twice"):
    protocols.lareqa({"xx": protocols.EncodedSet(dup, np.ones((2, 2)), np.eye(2))})
  none = _set("tydiqa_goldp", "xx", 2, [("A", {})])
  with pytest.raises(protocols.ProtocolError, match="question A has no relevant"):
    protocols.EncodedSet(none, np.ones((1, 2)), np.eye(2))


# ----------------------------------------------------------------------------
# Question ids beside every per-query list


def test_lareqa_per_query_qids_align_with_values_by_hand():
  # xx holds A, B, C; yy holds B then A (another order) and no C, like MLQA-R's id sets.
  sets = [_set("mlqa_r", "xx", 3, [("A", {0: 1}), ("B", {1: 1}), ("C", {2: 1})]),
          _set("mlqa_r", "yy", 3, [("B", {0: 1}), ("A", {2: 1})])]
  scores = {  #  x0   x1   x2   y0   y1   y2
      "xx": [[.9, .1, .5, .8, .7, .3],    # A: mono x0 rank 1; ->yy y2 rank 3
             [.2, .6, .7, .9, .1, .0],    # B: mono x1 rank 2; ->yy y0 rank 1
             [.0, .0, .9, .95, .0, .0]],  # C: mono x2 rank 1; no yy answer
      "yy": [[.1, .2, .3, .4, .5, .6],    # B: mono y0 rank 3; ->xx x1 rank 2
             [.4, .3, .2, .1, .6, .5]],   # A: mono y2 rank 2; ->xx x0 rank 1
  }
  pq = protocols.lareqa(_encode(sets, scores))["per_query"]
  ids, ap = pq["qids"], {s: pq[s] for s in ("mono", "cross", "multi")}
  want = {("mono", "xx"): (["A", "B", "C"], [1, 1 / 2, 1]), ("mono", "yy"): (["B", "A"], [1 / 3, 1 / 2]),
          ("cross", "xx-yy"): (["A", "B"], [1 / 3, 1]), ("cross", "yy-xx"): (["B", "A"], [1 / 2, 1])}
  for (setting, unit), (qids, values) in want.items():
    assert ids[setting][unit] == qids
    assert ap[setting][unit] == pytest.approx(values)
  assert set(ids["cross"]) == {"xx-yy", "yy-xx"}
  assert ids["multi"] == {"xx": ["A", "B", "C"], "yy": ["B", "A"]}
  # multi, pool x0 x1 x2 y0 y1 y2: yy's B (answers x1, y0) ranks y0 3rd and x1 5th.
  assert ap["multi"]["yy"][0] == pytest.approx((1 / 3 + 2 / 5) / 2)
  assert [len(v) for v in ap["multi"].values()] == [3, 2]


def test_tydi_and_sentences_per_query_qids_align_with_values():
  encoded = _random_tydi(seed=5)
  for protocol in (protocols.tydi, protocols.tydi_sentences):
    pq = protocol(encoded)["per_query"]
    for language, enc in encoded.items():
      ranking = _brute_ranks(enc.questions, enc.candidates)
      # one relevant candidate: AP = 1 / its rank in the language's own ranking
      ap = [1 / (1 + list(row).index(next(iter(q.relevant))))
            for row, q in zip(ranking, enc.data.questions)]
      assert pq["qids"]["mono"][language] == [q.qid for q in enc.data.questions]
      assert pq["mono"][language] == pytest.approx(ap)
      assert pq["qids"]["multi"][language] == pq["qids"]["mono"][language]
      assert len(pq["multi"][language]) == len(enc.data.questions)


def test_afriqa_per_query_qids_and_ndcg_align_with_values():
  eye = np.eye(3, dtype=np.float32)
  cands = [Candidate(f"p{i}", f"p{i}", f"d{i}") for i in range(3)]
  # The same ids "0", "1" in both languages (AfriQA numbers each language from 0).
  hau = RetrievalSet("afriqa", "hau", [Question("1", "n1", {1: 1}, "t1"), Question("0", "n0", {0: 1}, "t0")],
                     cands, IssueLog())
  swa = RetrievalSet("afriqa", "swa", [Question("0", "m0", {2: 1}, "u0")], cands, IssueLog())
  # hau native: "1" ranks its passage 2nd, "0" 1st; translated the other way round.
  encoded = {"hau": protocols.EncodedSet(hau, np.stack([0.8 * eye[0] + 0.6 * eye[1], eye[0]]), eye,
                                         np.stack([eye[1], 0.8 * eye[1] + 0.6 * eye[0]])),
             "swa": protocols.EncodedSet(swa, eye[2:], eye, eye[2:])}
  pq = protocols.afriqa(encoded)["per_query"]
  second = 1 / np.log2(3)  # nDCG@10 of one relevant item at rank 2
  assert pq["qids"] == {"native": {"hau": ["1", "0"], "swa": ["0"]},
                        "translated": {"hau": ["1", "0"], "swa": ["0"]}}
  assert pq["by_metric"]["ndcg@10"]["native"] == {"hau": pytest.approx([second, 1.0]), "swa": [1.0]}
  assert pq["by_metric"]["ndcg@10"]["translated"]["hau"] == pytest.approx([1.0, second])
  assert pq["native"]["hau"] == pytest.approx([0.5, 1.0])  # AP
