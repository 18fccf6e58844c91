"""What `python -m mlir_train.train` shows: the run it starts, its progress, `--help`.

- `summary_lines`: a few plain lines at the start (model, data, languages, batch
  kinds and their rates from `sampler.SAMPLING_MODES`, steps, batch, devices).
- `Progress`: on a terminal a tqdm bar (step, loss, pairs/s, time left); elsewhere
  (a log file, a pipe) one plain line per `config.log_every_steps`.
- `help_text`: the command's help with every `--config.KEY`, its default and the
  one-line meaning from configs/default.py (`configs.key_help`).

Everything goes to stderr: stdout keeps the run's JSON summary alone.
"""
from __future__ import annotations

import sys
import time

import numpy as np

import configs
from configs import split_list

HELP_FLAGS = ("--help", "-h", "--helpshort", "-?")


# ----------------------------------------------------------------------------
# --help
# ----------------------------------------------------------------------------
def wants_help(argv) -> bool:
  return any(arg in HELP_FLAGS for arg in argv)


def config_help() -> str:
  """One line per key of configs/default.py: `--config.KEY=DEFAULT  meaning`."""
  from configs import default
  defaults, meanings = default.get_config(), configs.key_help()
  keys = [k for k in meanings if k in defaults] + [k for k in defaults.keys() if k not in meanings]
  rows = [(f"--config.{key}={_flag_value(defaults[key])}", meanings.get(key, "")) for key in keys]
  width = min(44, max(len(flag) for flag, _ in rows))
  return "\n".join(f"  {flag:<{width}}  {meaning}".rstrip() if len(flag) <= width
                   else f"  {flag}\n  {'':<{width}}  {meaning}" for flag, meaning in rows)


def _flag_value(value) -> str:
  """A default as it is written on the command line."""
  if value is None:
    return "None"
  if isinstance(value, str):
    return repr(value) if value == "" else value
  return str(value)


def help_text(doc: str, flags_help: str) -> str:
  """The command's docstring, its flags and every config key."""
  flags_help = "\n".join(l for l in flags_help.splitlines() if not l.endswith(".py:")).strip("\n")
  return (f"{doc.strip()}\n\nflags:\n{flags_help.rstrip()}\n\n"
          "config keys (defaults of configs/default.py; override any with --config.KEY=VALUE):\n"
          f"{config_help()}\n")


# ----------------------------------------------------------------------------
# The start of a run
# ----------------------------------------------------------------------------
def batch_rates(config, data=None) -> dict[str, float]:
  """{batch kind: share of steps} of `config.sampling` (`sampler.SAMPLING_MODES`); with
  the training data, a per-language kind (MONO) is split into "mono de", "mono en", ..."""
  if config.data_source == "synthetic":
    return {"synthetic": 1.0}
  from data_pipelines import sampler
  weights = sampler.SAMPLING_MODES[config.sampling].weights(config)
  total = sum(weights.values())
  rates = {}
  for name, weight in weights.items():
    share = weight / total
    if data is not None and sampler.BATCH_SOURCES[name].per_language and len(data.languages):
      p = sampler.language_probabilities(data.mono_sizes(), config.mono_language_sampling,
                                         float(config.language_temperature))
      rates.update({f"{name} {l}": share * float(p_l) for l, p_l in zip(data.languages, p)})
    else:
      rates[name] = share
  return rates


def _count(n: int) -> str:
  """117653760 -> "117.7M", 52000 -> "52.0K"."""
  return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)


def _percent(x: float) -> str:
  return f"{100 * x:.0f}%" if x >= 0.1 or x == 0 else f"{100 * x:.1f}%"


def data_line(config, data=None, held_out=None) -> str:
  """What the run trains on: source, languages, pairs and groups, validation."""
  source = config.data_source
  if source == "synthetic":
    return "data: synthetic random tokens (no text, no languages)"
  if source == "files":
    what = f"your files {', '.join(split_list(config.train_files))}"
  else:
    from data_pipelines import folds
    fold = folds.get_fold(config.fold)
    what = f"fold {fold.name} pairs ({fold.train_benchmark}, {config.positive} positives)"
  if data is None:
    return f"data: {what}"
  groups = len(np.unique(data.table.group_id))
  line = (f"data: {what}; {len(data.languages)} languages {', '.join(data.languages)}; "
          f"{len(data.table.group_id):,} pairs in {groups:,} question groups")
  if held_out is not None:
    line += (f"; validation: {len(np.unique(held_out.table.group_id)):,} groups held out "
             f"({len(held_out.table.group_id):,} pairs)")
  return line


def summary_lines(config, model, devices, start_step: int, workdir, data=None,
                  held_out=None, parameters: tuple[int, int] | None = None) -> list[str]:
  """The plain lines printed before the first step. `parameters`: (all, trainable)."""
  c = model.config
  counts = (f"; {_count(parameters[0])} parameters, {_count(parameters[1])} trained"
            if parameters else "")
  rates = batch_rates(config, data)
  label = config.sampling if config.data_source != "synthetic" else "synthetic"
  if config.data_source != "synthetic" and config.sampling == "hybrid":
    label += f" (alpha={config.alpha:g})"
  kinds = ", ".join(f"{kind} {_percent(rate)}" for kind, rate in rates.items())
  platform = devices[0].platform if len(devices) else "?"
  resumed = f", resuming at step {start_step}" if start_step else ""
  return [
      f"train: {model.name} ({c.num_hidden_layers} layers, hidden {c.hidden_size}{counts}), "
      f"{config.compute_dtype}",
      data_line(config, data, held_out),
      f"batches: {label}; of the steps: {kinds}",
      f"steps: {int(config.total_steps)}{resumed}; {int(config.batch_size)} pairs per batch, "
      f"learning rate {config.learning_rate:g} (warmup {int(config.warmup_steps)}); "
      f"{len(devices)} {platform} device{'s' if len(devices) != 1 else ''}",
      f"workdir: {workdir} (metrics.jsonl, tensorboard/; a line every "
      f"{int(config.log_every_steps)} steps)",
  ]


def parameter_counts(params, config) -> tuple[int, int]:
  """(all parameters, those trained): frozen subtrees as `optimizer.split_frozen` holds out."""
  import jax
  from mlir_train import optimizer
  trainable, _ = optimizer.split_frozen(params, config.freeze_embeddings,
                                        config.get("freeze_layers", 0))
  size = lambda tree: int(sum(np.size(x) for x in jax.tree.leaves(tree)))
  return size(params), size(trainable)


def print_summary(lines, stream=None) -> None:
  stream = stream or sys.stderr
  print("\n".join(lines), file=stream, flush=True)


# ----------------------------------------------------------------------------
# Progress
# ----------------------------------------------------------------------------
class Progress:
  """A run's progress on `stream` (stderr): a tqdm bar when it is a terminal, else,
  with `plain`, one line per logged step (`log`). `enabled=False` shows nothing."""

  def __init__(self, total_steps: int, start_step: int, batch_size: int, enabled: bool = True,
               plain: bool = True, stream=None, clock=time.perf_counter):
    self.stream = stream or sys.stderr
    self.total, self.step_now, self.batch_size = int(total_steps), int(start_step), batch_size
    self.clock = clock
    interactive = bool(enabled and getattr(self.stream, "isatty", lambda: False)())
    self.plain = bool(enabled and plain and not interactive)
    self.bar = None
    if interactive:
      from tqdm import tqdm
      self.bar = tqdm(total=self.total, initial=self.step_now, desc="train", unit="step",
                      file=self.stream, dynamic_ncols=True)
    self._first = None  # (step, time) after the first step of this process (compiled)
    self._started = clock()

  def step(self) -> None:
    """One update step done (the first of this process: a plain line, it compiled)."""
    self.step_now += 1
    if self._first is None:
      self._first = (self.step_now, self.clock())
      if self.plain:
        print(f"step {self.step_now}/{self.total} done in {self._first[1] - self._started:.0f} s "
              "(the first step compiles)", file=self.stream, flush=True)
    if self.bar is not None:
      self.bar.update(1)

  def seconds_left(self) -> float | None:
    """From the pace since the first step of this process (None before a second step)."""
    if self._first is None or self.step_now <= self._first[0]:
      return None if self.step_now < self.total else 0.0
    first_step, first_time = self._first
    per_step = (self.clock() - first_time) / (self.step_now - first_step)
    return per_step * (self.total - self.step_now)

  def log(self, record: dict) -> None:
    """A metrics.jsonl record of the step just done: the bar's fields or a plain line."""
    kind = record.get("batch_kind", "")
    if kind and record.get("languages") not in (None, "", kind, "x", "mixed"):
      kind = f"{kind} {record['languages']}"
    if self.bar is not None:
      self.bar.set_postfix({"loss": f"{record['loss']:.4f}",
                            "pairs/s": f"{record.get('examples_per_sec', 0):.1f}",
                            **({"batch": kind} if kind else {})}, refresh=True)
    if self.plain:
      print(plain_line(record, self.total, self.seconds_left(), kind), file=self.stream,
            flush=True)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


def plain_line(record: dict, total_steps: int, seconds_left: float | None, kind: str = "") -> str:
  """`step 20/300  loss 2.3012  acc 0.438  pairs/s 51.0  left 0:04:10  mono de`."""
  parts = [f"step {record['step']}/{total_steps}", f"loss {record['loss']:.4f}"]
  if record.get("accuracy") is not None:
    parts.append(f"acc {record['accuracy']:.3f}")
  if record.get("validation_loss") is not None:
    parts.append(f"val_loss {record['validation_loss']:.4f}")
  parts.append(f"pairs/s {record.get('examples_per_sec', 0):.1f}")
  parts.append(f"left {clock_text(seconds_left)}")
  if kind:
    parts.append(kind)
  return "  ".join(parts)


def clock_text(seconds: float | None) -> str:
  """3725.2 -> "1:02:05"; None -> "?"."""
  if seconds is None:
    return "?"
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
