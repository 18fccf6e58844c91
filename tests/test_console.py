"""The training console: --help of every config key, the start summary, progress."""
import io
import json
import pathlib
import re
import subprocess
import sys
import types

import pytest

import configs
from configs import default, tiny
from data_pipelines import sampler
from mlir_train import console, train
from tests import synthetic_table

REPO = pathlib.Path(__file__).resolve().parents[1]


# --- --help: every key, its default and its meaning, from configs/default.py -------------
def test_every_config_key_has_a_help_line():
  keys = list(default.get_config().keys())
  meanings = configs.key_help()
  assert sorted(meanings) == sorted(keys), set(keys) ^ set(meanings)
  assert all(len(text.split()) >= 2 for text in meanings.values()), meanings


def test_train_help_exits_0_and_lists_every_key_with_default_and_meaning():
  done = subprocess.run([sys.executable, "-m", "mlir_train.train", "--help"], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  lines = done.stdout.splitlines()
  assert any(l.lstrip().startswith("--workdir") for l in lines)
  defaults, meanings = default.get_config(), configs.key_help()
  for key in defaults.keys():
    value = defaults[key]
    shown = "''" if value == "" else str(value)
    at = [i for i, l in enumerate(lines) if l.split()[:1] == [f"--config.{key}={shown}"]]
    assert at, f"--config.{key}={shown} missing from --help"
    text = " ".join(lines[at[0]].split()[1:]) or lines[at[0] + 1].strip()
    assert text == meanings[key]


# --- the start summary ---------------------------------------------------------------------
def sampler_config(**overrides):
  c = default.get_config()
  c.batch_size = 16
  c.update(overrides)
  return c


@pytest.mark.parametrize("overrides", [
    dict(sampling="hybrid", alpha=0.25, mono_language_sampling="size"),
    dict(sampling="mono", mono_language_sampling="uniform"),
    dict(sampling="cross"),
    dict(sampling="mixed")])
def test_batch_rates_are_the_samplers_frequencies(overrides):
  """The summary's rates against the kinds the sampler draws over 20,000 steps."""
  data = synthetic_table.make_training_data()
  config = sampler_config(**overrides)
  rates = console.batch_rates(config, data)
  assert sum(rates.values()) == pytest.approx(1.0)
  drawn = sampler.kinds(data, config, range(20000))
  seen = {}
  for kind, languages in drawn:
    name = kind.value if kind != sampler.BatchKind.MONO else f"mono {languages}"
    seen[name.lower()] = seen.get(name.lower(), 0) + 1 / len(drawn)
  assert set(seen) <= set(rates)
  for name, rate in rates.items():
    assert seen.get(name, 0.0) == pytest.approx(rate, abs=0.012), (name, seen, rates)


def test_summary_names_model_data_languages_rates_steps_and_devices():
  data = synthetic_table.make_training_data()
  config = sampler_config(sampling="hybrid", alpha=0.5, total_steps=40, data_source="pairs",
                          fold="B")
  model = types.SimpleNamespace(name="tiny-random-0", config=types.SimpleNamespace(
      num_hidden_layers=2, hidden_size=32))
  devices = [types.SimpleNamespace(platform="cpu")] * 2
  text = "\n".join(console.summary_lines(config, model, devices, 0, "/tmp/w", data=data,
                                         parameters=(123_456, 100_000)))
  assert "tiny-random-0 (2 layers, hidden 32; 123.5K parameters, 100.0K trained)" in text
  assert "fold B pairs (xquad_r" in text
  assert f"4 languages de, en, es, zh; {len(data.table.group_id):,} pairs" in text
  assert "hybrid (alpha=0.5)" in text and "cross 50%" in text
  assert "mono de 12%" in text  # uniform over 4 languages: 0.5 / 4
  assert "steps: 40; 16 pairs per batch" in text and "2 cpu devices" in text


# --- progress --------------------------------------------------------------------------------
class Terminal(io.StringIO):
  def isatty(self):
    return True


def test_terminal_gets_a_bar_with_step_loss_pairs_per_second_and_time_left():
  out = Terminal()
  progress = console.Progress(10, 0, 16, stream=out)
  for _ in range(3):
    progress.step()
  progress.log({"step": 3, "loss": 1.23456, "examples_per_sec": 48.04, "batch_kind": "mono",
                "languages": "de"})
  progress.close()
  text = out.getvalue()
  assert "3/10" in text and "loss=1.2346" in text and "pairs/s=48.0" in text
  assert re.search(r"<\d\d:\d\d", text)  # tqdm's time left
  assert "\nstep " not in text  # no plain lines on a terminal


def test_time_left_is_measured_after_the_first_step():
  """The first step (compilation) is left out of the pace: 1 s per step after it."""
  now = [0.0]
  out = io.StringIO()
  progress = console.Progress(10, 0, 16, stream=out, clock=lambda: now[0])
  now[0] = 30.0
  progress.step()  # step 1 took 30 s (compiling)
  assert progress.seconds_left() is None
  assert out.getvalue() == "step 1/10 done in 30 s (the first step compiles)\n"
  out.truncate(0), out.seek(0)
  for _ in range(4):
    now[0] += 1.0
    progress.step()
  assert progress.seconds_left() == pytest.approx(5.0)  # 5 steps left at 1 s each
  progress.log({"step": 5, "loss": 2.0, "accuracy": 0.5, "examples_per_sec": 16.0})
  assert out.getvalue() == "step 5/10  loss 2.0000  acc 0.500  pairs/s 16.0  left 0:00:05\n"


def test_train_console_prints_the_summary_then_a_line_per_logged_step(tmp_path, capsys):
  """Not a terminal (captured): the summary, then one line per log_every_steps that
  agrees with metrics.jsonl; stdout stays free for the JSON summary."""
  config = tiny.get_config()
  config.total_steps, config.log_every_steps, config.checkpoint_every_steps = 4, 2, 4
  train.train(config, tmp_path / "run", console=True)
  out, err = capsys.readouterr()
  assert out == ""
  lines = err.splitlines()
  assert lines[0].startswith("train: tiny-random-0 (2 layers")
  assert "data: synthetic" in err and "steps: 4; 16 pairs per batch" in err
  logged = [json.loads(l) for l in (tmp_path / "run" / train.METRICS_FILE).read_text().splitlines()]
  assert "step 1/4 done in " in err
  plain = [l for l in lines if l.startswith("step ") and " done in " not in l]
  assert [l.split()[1] for l in plain] == [f"{r['step']}/4" for r in logged] == ["2/4", "4/4"]
  for line, record in zip(plain, logged):
    assert f"loss {record['loss']:.4f}" in line and "pairs/s" in line and "left " in line


def test_train_without_console_prints_no_lines(tmp_path, capsys):
  """A Python caller (the study) gets no summary and no plain lines off a terminal."""
  config = tiny.get_config()  # as above (the compiled steps are reused), logging every step
  config.total_steps, config.log_every_steps, config.checkpoint_every_steps = 4, 1, 4
  train.train(config, tmp_path / "run")
  out, err = capsys.readouterr()
  assert out == "" and "step " not in err and "train: " not in err
