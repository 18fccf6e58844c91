"""study.plan: a run made before a training key existed is the same run when the key is at
its default; any other difference in its provenance is refused."""
import json

import pytest

from study import plan

pytestmark = [pytest.mark.fast]


def _provenance(**train):
  return {"model": {"name": "tiny-random"}, "eval": {"languages": {"xquad_r": ["de"]}},
          "train_config": {"seed": 0, "sampling": "mono", **train}}


def test_a_new_training_key_at_its_default_is_no_difference(tmp_path):
  run = tmp_path / "runs" / "mono-s0"
  run.mkdir(parents=True)
  (run / plan.PROVENANCE_FILE).write_text(json.dumps(_provenance()))  # made before the key
  plan.check_run_dirs(tmp_path, {"mono-s0": _provenance(default_language="")})
  with pytest.raises(plan.StudyError, match="default_language: '' -> 'de'"):
    plan.check_run_dirs(tmp_path, {"mono-s0": _provenance(default_language="de")})
  with pytest.raises(plan.StudyError, match="seed"):
    plan.check_run_dirs(tmp_path, {"mono-s0": {**_provenance(), "train_config": {"seed": 1, "sampling": "mono"}}})
  with pytest.raises(plan.StudyError, match="not_a_key"):  # unknown to configs/default.py
    plan.check_run_dirs(tmp_path, {"mono-s0": _provenance(not_a_key=0)})
