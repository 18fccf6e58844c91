"""Evaluation protocols on precomputed embeddings: which queries search which pool.

Every function takes `{language: EncodedSet}` (a `RetrievalSet` with its question
and candidate embeddings, each text encoded once) and reuses those embeddings
across settings. Results are plain dicts, ready for JSON.

LAReQA (XQuAD-R, MLQA-R), after Roy et al. 2020 and the hybrid-batch paper:
- mono:  queries of language a against a's candidates.
- cross: queries of a against b's candidates for every ordered pair a != b;
  relevant = b's answer sentence(s) for the same question id.
- multi: one pool of every language's candidates; relevant = the answer
  sentences of the question id in every language.
  mAP (full ranking) everywhere, R@1 for mono and cross, R@10 for multi.
- language bias (Huang et al. 2023): in the multi pool, for each query, the best
  rank of each language's answer, then (worst of those - best of those), ranks
  1-based; averaged over the query language's queries, then macro over query
  languages. Queries whose id has an answer in only one language are left out
  (their spread is 0 by construction) and counted.
TyDi GoldP: mono (each language's own unique passages) and multi (the union),
  mrr@10, r@1, r@10, ndcg@10, map, and in multi the share of the top 10 that is
  in the query's language.
TyDi GoldP at sentence level (LAReQA's construction on TyDi): the same two
  settings with the candidates being the sentences of each language's gold
  passages and XQuAD-R's metrics: mono mAP, R@1; multi (one pool of the nine
  languages' sentences; relevant = the query's own answer sentence(s)) mAP,
  R@10, plus the share of the top 10 in the query's language.
AfriQA: per language, the native questions and their human translations
  (pivot language) each search the language's pool of gold passages; nDCG@10,
  MRR@10, R@1, R@10 for both, and the robustness gap = native - translated.
MIRACL format: mono, ndcg@10 and r@100.

Macro = unweighted mean over languages (or language pairs for cross).

Per-query values (for paired tests across queries): `per_query[setting][unit]` is each
query's average precision, unit = language (or "a-b" pair for LAReQA cross), and
`per_query["qids"][setting][unit]` the question ids in the same order (a question id
is the parallel group in XQuAD-R / MLQA-R). AfriQA adds
`per_query["by_metric"]["ndcg@10"][setting][language]`, its main metric per query.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from data_pipelines.errors import ProjectError
from data_pipelines.readers import AFRIQA_PIVOT, RetrievalSet
from eval import metrics as metrics_lib
from eval import search

LAREQA_METRICS = {"mono": ("map", "r@1"), "cross": ("map", "r@1"), "multi": ("map", "r@10")}
TYDI_METRICS = ("mrr@10", "r@1", "r@10", "ndcg@10", "map")
MIRACL_METRICS = ("ndcg@10", "r@100")
AFRIQA_METRICS = ("ndcg@10", "mrr@10", "r@1", "r@10")


class ProtocolError(ProjectError, ValueError):
  """Inputs that the protocol cannot evaluate (names the benchmark, language, record)."""


@dataclasses.dataclass
class EncodedSet:
  """One language of a benchmark with its embeddings."""
  data: RetrievalSet
  questions: np.ndarray   # [n_questions, dim] unit vectors, in data.questions order
  candidates: np.ndarray  # [n_candidates, dim] unit vectors, in data.candidates order
  # [n_questions, dim]: each question's `translated` text (AfriQA), else None
  translated_questions: np.ndarray | None = None

  def __post_init__(self):
    where = f"{self.data.benchmark}/{self.data.language}"
    if self.translated_questions is not None and len(self.translated_questions) != len(self.questions):
      raise ProtocolError(f"{where}: {len(self.translated_questions)} translated-question embeddings "
                          f"for {len(self.data.questions)} questions")
    if len(self.questions) != len(self.data.questions):
      raise ProtocolError(f"{where}: {len(self.questions)} question embeddings for "
                          f"{len(self.data.questions)} questions")
    if len(self.candidates) != len(self.data.candidates):
      raise ProtocolError(f"{where}: {len(self.candidates)} candidate embeddings for "
                          f"{len(self.data.candidates)} candidates")
    if not self.data.candidates:
      raise ProtocolError(f"{where}: no candidates")
    for question in self.data.questions:
      if not any(g >= 1 for g in question.relevant.values()):
        raise ProtocolError(f"{where}: question {question.qid} has no relevant candidate")


def paragraph_ids(enc: EncodedSet, language: str | None = None) -> list[str]:
  """Each question's paragraph: the passage (or the paragraph of the sentence: doc ids
  "PARAGRAPH:SENTENCE") of its first relevant candidate, prefixed by the language.
  Questions sharing a paragraph are not independent: the study's query-level test
  resamples them together (`per_query["paragraphs"]`)."""
  prefix = (language or enc.data.language) + ":"
  return [prefix + enc.data.candidates[min(q.relevant)].doc_id.rsplit(":", 1)[0]
          for q in enc.data.questions]


def _mean(values) -> float:
  return float(np.mean(values)) if len(values) else float("nan")


def _means(per_query: Mapping[str, np.ndarray], rows=slice(None)) -> dict[str, float]:
  return {name: _mean(values[rows]) for name, values in per_query.items()}


def _macro(tables: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
  names = next(iter(tables.values())).keys() if tables else ()
  return {name: _mean([t[name] for t in tables.values()]) for name in names}


def retrieve(queries: np.ndarray, corpus: np.ndarray, qrels: Sequence[Mapping[int, int]],
             names: Sequence[str], search_options: Mapping | None = None):
  """Search and score: (per-query metrics {name: [Q]}, ranked [Q, k], ranks of relevant [Q, T]).

  k is the largest cut-off among `names` (at most the corpus size); the ranks of
  every relevant item in the full ranking are computed only when needed
  ('map' in names).
  """
  options = dict(search_options or {})
  k = min(max(metrics_lib.max_cutoff(names), 10), corpus.shape[0])
  _, ranked = search.top_k(queries, corpus, k, **options)  # [Q, k]
  targets = metrics_lib.qrels_targets(qrels)  # [Q, T]
  ranks = search.relevant_ranks(queries, corpus, targets, **options) if "map" in names else None
  return metrics_lib.compute(names, ranked, qrels, ranks), ranked, ranks


def _pool(encoded: Mapping[str, EncodedSet]):
  """All languages' candidates in one pool: (embeddings [N, dim], offsets, language id [N])."""
  languages = list(encoded)
  sizes = [len(encoded[l].candidates) for l in languages]
  offsets = dict(zip(languages, np.cumsum([0] + sizes[:-1]).tolist()))
  pool = np.concatenate([encoded[l].candidates for l in languages])
  language_id = np.repeat(np.arange(len(languages)), sizes)
  return pool, offsets, language_id


# ----------------------------------------------------------------------------
# LAReQA


def _answers_by_qid(encoded: Mapping[str, EncodedSet]) -> dict[str, dict[str, Mapping[int, int]]]:
  """language -> question id -> relevant candidates (indices in that language)."""
  answers = {}
  for language, enc in encoded.items():
    answers[language] = {}
    for question in enc.data.questions:
      if question.qid in answers[language]:
        raise ProtocolError(f"{enc.data.benchmark}/{language}: question id {question.qid} "
                            "appears twice; LAReQA needs one question per id and language")
      answers[language][question.qid] = {i: g for i, g in question.relevant.items() if g >= 1}
  return answers


def language_bias(ranks: np.ndarray, target_language: np.ndarray) -> np.ndarray:
  """Per query: max over languages of the language's best rank, minus the min of those.

  Args:
    ranks: int [Q, T] 1-based ranks of the relevant items in the pooled ranking (0 = padding).
    target_language: int [Q, T] language id of each relevant item (ignored at padding).
  Returns:
    float64 [Q]; NaN for queries whose relevant items are all in one language.
  """
  n_languages = int(target_language.max(initial=0)) + 1
  big = np.iinfo(np.int64).max
  best = np.full((ranks.shape[0], n_languages), big, np.int64)  # [Q, languages]
  for language in range(n_languages):
    mine = (target_language == language) & (ranks > 0)
    best[:, language] = np.where(mine, ranks, big).min(axis=1)
  present = best < big
  spread = (np.where(present, best, 0).max(axis=1)
            - np.where(present, best, big).min(axis=1)).astype(np.float64)
  return np.where(present.sum(axis=1) >= 2, spread, np.nan)


def lareqa(encoded: Mapping[str, EncodedSet], search_options: Mapping | None = None) -> dict:
  """Mono, cross and multi settings plus language bias for XQuAD-R / MLQA-R."""
  languages = list(encoded)
  answers = _answers_by_qid(encoded)
  mono, cross = {}, {}
  per_query_ap = {"mono": {}, "cross": {}, "multi": {}}  # setting -> language/pair -> [queries]
  qids = {"mono": {}, "cross": {}, "multi": {}}  # the same shape: question id of each value
  paragraphs = {"mono": {}, "cross": {}, "multi": {}}  # the same shape: the question's paragraph
  own = {a: paragraph_ids(encoded[a]) for a in languages}

  # Mono and cross: one search per corpus language b with every language's queries.
  for b in languages:
    rows, qrels = [], []  # (query language, question index) and relevance in b
    for a in languages:
      for i, question in enumerate(encoded[a].data.questions):
        if question.qid in answers[b]:
          rows.append((a, i))
          qrels.append(answers[b][question.qid])
    if not rows:
      continue
    queries = np.stack([encoded[a].questions[i] for a, i in rows])  # [Q_b, dim]
    per_query, _, _ = retrieve(queries, encoded[b].candidates, qrels,
                               sorted(set(LAREQA_METRICS["mono"]) | set(LAREQA_METRICS["cross"])),
                               search_options)
    query_language = np.array([a for a, _ in rows])
    row_qids = np.array([encoded[a].data.questions[i].qid for a, i in rows], dtype=object)
    row_paragraphs = np.array([own[a][i] for a, i in rows], dtype=object)
    for a in languages:
      mask = query_language == a
      if not mask.any():
        continue
      setting, unit, table = ("mono", a, mono) if a == b else ("cross", f"{a}-{b}", cross)
      table[unit] = _means({n: per_query[n] for n in LAREQA_METRICS[setting]}, mask)
      per_query_ap[setting][unit] = per_query["map"][mask].tolist()
      qids[setting][unit] = row_qids[mask].tolist()
      paragraphs[setting][unit] = row_paragraphs[mask].tolist()

  # Multi: one pool; every language's answer to the question id is relevant.
  pool, offsets, _ = _pool(encoded)
  language_index = {l: j for j, l in enumerate(languages)}
  queries, qrels, target_langs, query_language = [], [], [], []
  for a in languages:
    for i, question in enumerate(encoded[a].data.questions):
      judged, langs = {}, {}
      for b in languages:
        for item, grade in answers[b].get(question.qid, {}).items():
          judged[offsets[b] + item] = grade
          langs[offsets[b] + item] = language_index[b]
      queries.append(encoded[a].questions[i])
      qrels.append(judged)
      target_langs.append(langs)
      query_language.append(a)
  per_query, _, ranks = retrieve(np.stack(queries), pool, qrels, LAREQA_METRICS["multi"],
                                 search_options)
  targets = metrics_lib.qrels_targets(qrels)  # same column order as `ranks`
  target_language = np.array([[target_langs[q].get(t, 0) for t in row]
                              for q, row in enumerate(targets)], np.int64).reshape(targets.shape)
  bias = language_bias(ranks, target_language)
  query_language = np.array(query_language)
  multi, bias_per_language, bias_excluded = {}, {}, {}
  for a in languages:
    mask = query_language == a
    multi[a] = _means(per_query, mask)
    per_query_ap["multi"][a] = per_query["map"][mask].tolist()
    qids["multi"][a] = [q.qid for q in encoded[a].data.questions]
    paragraphs["multi"][a] = own[a]
    spread = bias[mask]
    bias_per_language[a] = _mean(spread[~np.isnan(spread)])
    bias_excluded[a] = int(np.isnan(spread).sum())

  return {
      "settings": {
          "mono": {"macro": _macro(mono), "per_language": mono},
          "cross": {"macro": _macro(cross), "per_pair": cross,
                    "per_query_language": {a: _macro({p: v for p, v in cross.items()
                                                      if p.split("-")[0] == a})
                                           for a in languages if len(languages) > 1}},
          "multi": {"macro": _macro(multi), "per_language": multi},
      },
      "language_bias": {
          "macro": _mean([v for v in bias_per_language.values() if not np.isnan(v)]),
          "per_language": bias_per_language,
          "queries_without_parallel_answers": bias_excluded,
      },
      "counts": _counts(encoded, pool_size=len(pool)),
      "per_query": {**per_query_ap, "qids": qids, "paragraphs": paragraphs},
  }


def _counts(encoded: Mapping[str, EncodedSet], pool_size: int) -> dict:
  return {"per_language": {l: {"queries": len(e.questions), "candidates": len(e.candidates)}
                           for l, e in encoded.items()},
          "pool_candidates": int(pool_size)}


# ----------------------------------------------------------------------------
# TyDi GoldP and MIRACL


def tydi(encoded: Mapping[str, EncodedSet], search_options: Mapping | None = None) -> dict:
  """Mono (own passages) and multi (union of all languages' passages) retrieval."""
  return _mono_and_pooled(encoded, TYDI_METRICS, TYDI_METRICS, search_options)


def tydi_sentences(encoded: Mapping[str, EncodedSet], search_options: Mapping | None = None) -> dict:
  """TyDi GoldP at sentence level: mono (own sentences; mAP, R@1) and the pooled
  nine-language setting (all languages' sentences; mAP, R@10, top-10 share in the
  query's language). Relevance stays within the query's language (TyDi is not parallel)."""
  return _mono_and_pooled(encoded, LAREQA_METRICS["mono"], LAREQA_METRICS["multi"], search_options)


def _mono_and_pooled(encoded: Mapping[str, EncodedSet], mono_metrics: Sequence[str],
                     multi_metrics: Sequence[str], search_options: Mapping | None) -> dict:
  """Each language's queries against its own candidates, then against the pool of all
  languages' candidates (relevant: the query's own candidates, moved by the pool offset).
  Per-query AP of both settings goes to `per_query` ('map' is always computed)."""
  languages = list(encoded)
  mono = {}
  per_query_ap = {"mono": {}, "multi": {}}  # setting -> language -> [queries]
  qids = {s: {l: [q.qid for q in e.data.questions] for l, e in encoded.items()} for s in per_query_ap}
  paragraphs = {s: {l: paragraph_ids(e, l) for l, e in encoded.items()} for s in per_query_ap}
  for language, enc in encoded.items():
    qrels = [q.relevant for q in enc.data.questions]
    names = tuple(dict.fromkeys([*mono_metrics, "map"]))
    per_query, _, _ = retrieve(enc.questions, enc.candidates, qrels, names, search_options)
    mono[language] = _means({n: per_query[n] for n in mono_metrics})
    per_query_ap["mono"][language] = per_query["map"].tolist()

  pool, offsets, language_id = _pool(encoded)
  multi = {}
  for j, language in enumerate(languages):
    enc = encoded[language]
    qrels = [{offsets[language] + i: g for i, g in q.relevant.items()} for q in enc.data.questions]
    names = tuple(dict.fromkeys([*multi_metrics, "map"]))
    per_query, ranked, _ = retrieve(enc.questions, pool, qrels, names, search_options)
    top10 = ranked[:, :10]  # [Q, <=10]
    per_query_ap["multi"][language] = per_query["map"].tolist()
    per_query = {n: per_query[n] for n in multi_metrics}
    per_query["top10_same_language"] = (language_id[top10] == j).mean(axis=1)
    multi[language] = _means(per_query)

  return {
      "settings": {"mono": {"macro": _macro(mono), "per_language": mono},
                   "multi": {"macro": _macro(multi), "per_language": multi}},
      "counts": _counts(encoded, pool_size=len(pool)),
      "per_query": {**per_query_ap, "qids": qids, "paragraphs": paragraphs},
  }


def miracl(encoded: Mapping[str, EncodedSet], search_options: Mapping | None = None) -> dict:
  """Monolingual retrieval per language: nDCG@10 and Recall@100."""
  mono = {}
  for language, enc in encoded.items():
    qrels = [q.relevant for q in enc.data.questions]
    per_query, _, _ = retrieve(enc.questions, enc.candidates, qrels, MIRACL_METRICS, search_options)
    mono[language] = _means(per_query)
  return {"settings": {"mono": {"macro": _macro(mono), "per_language": mono}},
          "counts": _counts(encoded, pool_size=sum(len(e.candidates) for e in encoded.values()))}


def afriqa(encoded: Mapping[str, EncodedSet], search_options: Mapping | None = None) -> dict:
  """Per language: native and translated questions against the language's gold passages.

  Both runs use the same questions and pool, so `robustness_gap` (native minus
  translated, per metric; negative = the model loses by the question being in the
  African language) is a paired difference. Macro = mean over languages.
  """
  native, translated, gap = {}, {}, {}
  per_query_ap = {"native": {}, "translated": {}}  # setting -> language -> [queries]
  per_query_ndcg = {"native": {}, "translated": {}}
  qids = {s: {l: [q.qid for q in e.data.questions] for l, e in encoded.items()} for s in per_query_ap}
  names = (*AFRIQA_METRICS, "map")
  for language, enc in encoded.items():
    if enc.translated_questions is None:
      raise ProtocolError(f"{enc.data.benchmark}/{language}: no translated-question embeddings "
                          "(the AfriQA protocol needs Question.translated for every question)")
    qrels = [q.relevant for q in enc.data.questions]
    for setting, queries, table in (("native", enc.questions, native),
                                    ("translated", enc.translated_questions, translated)):
      per_query, _, _ = retrieve(queries, enc.candidates, qrels, names, search_options)
      table[language] = _means({n: per_query[n] for n in AFRIQA_METRICS})
      per_query_ap[setting][language] = per_query["map"].tolist()
      per_query_ndcg[setting][language] = per_query["ndcg@10"].tolist()
    gap[language] = {n: native[language][n] - translated[language][n] for n in AFRIQA_METRICS}
  return {
      "settings": {"native": {"macro": _macro(native), "per_language": native},
                   "translated": {"macro": _macro(translated), "per_language": translated}},
      "robustness_gap": {"macro": _macro(gap), "per_language": gap},
      "counts": _afriqa_counts(encoded),
      "per_query": {**per_query_ap, "qids": qids, "by_metric": {"ndcg@10": per_query_ndcg},
                    "paragraphs": {s: {l: paragraph_ids(e, l) for l, e in encoded.items()}
                                   for s in per_query_ap}},
  }


def _afriqa_counts(encoded: Mapping[str, EncodedSet]) -> dict:
  """Per language: queries, candidates (= its own pool) and the pivot language."""
  counts = _counts(encoded, pool_size=0)
  del counts["pool_candidates"]  # no shared pool: each language searches its own passages
  for language, table in counts["per_language"].items():
    table["pivot_language"] = AFRIQA_PIVOT.get(language)
  counts["pool"] = "per language: the split's unique gold passages of that language"
  return counts



# ----------------------------------------------------------------------------
# Bitext retrieval (NTREX-128)

BITEXT_METRICS = ("acc@1", "mrr@10", "map")  # map: reciprocal rank of the one translation


def bitext(encoded: Mapping[str, EncodedSet], search_options: Mapping | None = None) -> dict:
  """Translation retrieval per language X against the same English lines, both ways:
  `x_to_en` (each X line's questions embedding against every English line's candidate
  embedding) and `en_to_x` (each English line against every X line, from the same
  embeddings; cosine is symmetric), accuracy@1, MRR@10 and the full-rank reciprocal rank
  (`map`); and `pooled`: each English line against the X lines of every language at once
  (relevant: its translation in each language; mAP, accuracy@1, and the share of the
  top-L in one language, L = number of languages: low when the translations rank together).
  Question ids are line numbers, shared across languages."""
  languages = list(encoded)
  settings = {"x_to_en": {}, "en_to_x": {}}
  per_query = {"x_to_en": {}, "en_to_x": {}, "by_metric": {"acc@1": {"x_to_en": {}, "en_to_x": {}}}}
  qids = {"x_to_en": {}, "en_to_x": {}}
  for language, enc in encoded.items():
    questions = enc.data.questions
    qrels = [q.relevant for q in questions]
    table, _, _ = retrieve(enc.questions, enc.candidates, qrels, BITEXT_METRICS, search_options)
    settings["x_to_en"][language] = _means(table)
    per_query["x_to_en"][language] = table["map"].tolist()
    per_query["by_metric"]["acc@1"]["x_to_en"][language] = table["acc@1"].tolist()
    qids["x_to_en"][language] = [q.qid for q in questions]
    # en -> X: the English lines that some kept X line translates, against those X lines.
    back: dict[int, dict[int, int]] = {}
    for i, q in enumerate(questions):
      for j in q.relevant:
        back.setdefault(j, {})[i] = 1
    english = sorted(back)
    table, _, _ = retrieve(enc.candidates[english], enc.questions, [back[j] for j in english],
                           BITEXT_METRICS, search_options)
    settings["en_to_x"][language] = _means(table)
    per_query["en_to_x"][language] = table["map"].tolist()
    per_query["by_metric"]["acc@1"]["en_to_x"][language] = table["acc@1"].tolist()
    qids["en_to_x"][language] = [enc.data.candidates[j].doc_id.removeprefix("line") for j in english]

  # Pooled: English line j (the first language's candidate embedding) against every X line.
  sizes = [len(encoded[l].questions) for l in languages]
  offsets = np.cumsum([0] + sizes[:-1])
  pool = np.concatenate([encoded[l].questions for l in languages])
  language_id = np.repeat(np.arange(len(languages)), sizes)
  targets: dict[int, dict[int, int]] = {}
  for offset, language in zip(offsets, languages):
    for i, q in enumerate(encoded[language].data.questions):
      for j in q.relevant:
        targets.setdefault(j, {})[int(offset) + i] = 1
  english = sorted(targets)
  first = encoded[languages[0]]
  top = len(languages)
  names = ("map", "acc@1", f"r@{top}")
  table, ranked, _ = retrieve(first.candidates[english], pool, [targets[j] for j in english],
                              names, search_options)
  ids = language_id[ranked[:, :top]]  # [Q, L]
  same = np.array([np.bincount(row, minlength=len(languages)).max() / row.size for row in ids])
  pooled = {"map": _mean(table["map"]), "acc@1": _mean(table["acc@1"]),
            "max_share_one_language_top_l": _mean(same)}
  return {
      "settings": {"x_to_en": {"macro": _macro(settings["x_to_en"]), "per_language": settings["x_to_en"]},
                   "en_to_x": {"macro": _macro(settings["en_to_x"]), "per_language": settings["en_to_x"]},
                   "pooled": {"macro": pooled, "per_language": {}}},
      "counts": _counts(encoded, pool_size=len(pool)),
      "per_query": {**per_query, "qids": qids},
  }
