"""The hybrid-batch study: plan, drive, summarise, test and render many runs x seeds.

  plan.py         presets (configs/study/*.py) -> the runs, their ids and provenance
  driver.py       `python -m study` / `python -m replicate`: train, evaluate, read back, resume
  methods.py      the kinds of run (sampling strategies, robust fine-tuning) and their labels
  statistics.py   intervals, paired tests over seeds and over questions, Holm
  comparisons.py  the targets (from the benchmark registry) and the paired comparisons
  summaries.py    every number of the report, per declared benchmark section
  render.py       report.md from results.json
  plots.py        the plots from results.json

Dependencies run one way: study imports eval, mlir_train, data_pipelines, configs; nothing
below imports study.
"""
