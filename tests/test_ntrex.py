"""NTREX-128 bitext retrieval: the reader, the protocol against a numpy brute force, the entry."""
import numpy as np
import pytest

from data_pipelines import readers
from eval import benchmarks, protocols


def _unit(x):
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _encoded(language, english, lines, drop=()):
  """A bitext EncodedSet: X line i translates English line i (line ids shared)."""
  n = len(english)
  questions = [readers.Question(str(i), f"{language} {i}", {i: 1}) for i in range(n) if i not in drop]
  candidates = [readers.Candidate(f"en {i}", f"en {i}", f"line{i}") for i in range(n)]
  data = readers.RetrievalSet("ntrex128", language, questions, candidates, readers.IssueLog())
  keep = [i for i in range(n) if i not in drop]
  return protocols.EncodedSet(data, lines[keep], english)


def _brute(queries, corpus, relevant):
  """Rank (0-based, ties by lower index) of each query's relevant item, by numpy."""
  scores = queries @ corpus.T
  ranks = []
  for q, r in enumerate(relevant):
    s = scores[q]
    ranks.append(int(np.sum(s > s[r]) + np.sum((s == s[r])[:r])))
  return np.array(ranks)


@pytest.mark.fast
def test_bitext_matches_a_numpy_brute_force_both_ways():
  rng = np.random.default_rng(0)
  n, dim = 40, 16
  english = _unit(rng.normal(size=(n, dim)))
  sets = {}
  for j, (language, noise) in enumerate([("sw", 0.9), ("de", 0.3), ("yor", 1.5)]):
    lines = _unit(english + noise * rng.normal(size=(n, dim)))
    sets[language] = (lines, _encoded(language, english, lines, drop=(3,) if language == "yor" else ()))
  result = protocols.bitext({l: e for l, (_, e) in sets.items()})
  for language, (lines, enc) in sets.items():
    keep = [int(q.qid) for q in enc.data.questions]
    ranks = _brute(lines[keep], english, keep)  # X -> en
    got = result["settings"]["x_to_en"]["per_language"][language]
    assert got["acc@1"] == pytest.approx(np.mean(ranks == 0))
    assert got["map"] == pytest.approx(np.mean(1 / (ranks + 1)), rel=1e-6)
    assert got["mrr@10"] == pytest.approx(np.mean(np.where(ranks < 10, 1 / (ranks + 1), 0)), rel=1e-6)
    back = _brute(english[keep], lines[keep], range(len(keep)))  # en -> X among kept lines
    got = result["settings"]["en_to_x"]["per_language"][language]
    assert got["acc@1"] == pytest.approx(np.mean(back == 0))
    assert result["per_query"]["qids"]["en_to_x"][language] == [str(i) for i in keep]
  # Noisier translations are found less often: the ordering the benchmark exists to show.
  acc = {l: result["settings"]["x_to_en"]["per_language"][l]["acc@1"] for l in sets}
  assert acc["de"] > acc["sw"] > acc["yor"]
  assert result["settings"]["x_to_en"]["macro"]["acc@1"] == pytest.approx(np.mean(list(acc.values())))
  # Pooled: English line j against every language's lines; AP by hand for line 0.
  pool = np.concatenate([sets[l][0][[int(q.qid) for q in sets[l][1].data.questions]] for l in sets])
  ids = np.concatenate([[int(q.qid) for q in sets[l][1].data.questions] for l in sets])
  aps = []
  for j in range(n):
    order = np.argsort(-(pool @ english[j]), kind="stable")
    hits = ids[order] == j
    precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
    aps.append(precision[hits].mean())
  assert result["settings"]["pooled"]["macro"]["map"] == pytest.approx(np.mean(aps), rel=1e-5)


@pytest.mark.fast
def test_the_entry_reads_the_real_files(data_dir):
  bench = benchmarks.get("ntrex128")
  assert bench.default_split == "test" and len(bench.default_languages()) == len(readers.NTREX_FILES)
  for group in bench.groups.values():
    assert set(group) <= set(bench.languages)
  assert {"bem", "hau", "ibo", "kin", "sw", "yor", "zul"} <= set(bench.groups["AfriQA"])
  bn = bench.read(data_dir, "bn")
  assert len(bn.questions) == len(bn.candidates) == 1997
  source = (data_dir / "ntrex128" / readers.NTREX_SOURCE).read_text(encoding="utf-8").splitlines()
  target = (data_dir / "ntrex128" / "newstest2019-ref.ben.txt").read_text(encoding="utf-8").splitlines()
  q = bn.questions[1234]
  assert q.text == target[1234] and bn.candidates[next(iter(q.relevant))].text == source[1234]
  with pytest.raises(readers.DataError, match="unknown language"):
    bench.read(data_dir, "xx")


@pytest.mark.fast
def test_misaligned_files_are_refused(tmp_path):
  (tmp_path / "ntrex128").mkdir()
  (tmp_path / "ntrex128" / readers.NTREX_SOURCE).write_text("a\nb\nc\n")
  (tmp_path / "ntrex128" / "newstest2019-ref.ben.txt").write_text("x\ny\n")
  with pytest.raises(readers.DataError, match="line-aligned"):
    readers.read_ntrex128(tmp_path, "bn")
  (tmp_path / "ntrex128" / "newstest2019-ref.ben.txt").write_bytes(b"x\n\xff\nz\n")
  rs = readers.read_ntrex128(tmp_path, "bn")
  assert [q.qid for q in rs.questions] == ["0", "2"] and rs.issues.num_dropped == 1


def test_eval_run_evaluates_it_through_the_registry(data_dir, tmp_path):
  """`eval.run` on two languages with a tiny model: the result holds both directions and the
  pooled setting, its report is written, and the numbers are the protocol's on the same
  embeddings (the model encodes each text identically: a line equal to its source ranks
  where a numpy search puts it)."""
  from eval import run
  from mlir_train import models
  model = models.load_model("tiny-random")
  result = run.evaluate(model, "ntrex128", languages=["sw", "yor"], data_dir=data_dir,
                        max_length=32, progress=False, max_questions=200)
  assert result["languages"] == ["sw", "yor"]
  for setting in ("x_to_en", "en_to_x"):
    for language in ("sw", "yor"):
      value = result["settings"][setting]["per_language"][language]["acc@1"]
      assert 0 <= value <= 1
  assert 0 < result["settings"]["pooled"]["macro"]["map"] <= 1
  assert result["counts"]["per_language"]["sw"]["queries"] == 200
