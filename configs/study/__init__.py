"""Study presets for `python -m replicate --preset NAME` (configs/study/NAME.py).

Each module's `get_config()` returns the preset as an ml_collections ConfigDict;
`python -m replicate --preset PATH.py` takes your own file, and
`--set KEY=VALUE` overrides any field (e.g. `--set seeds=0,1`,
`--set train_overrides.total_steps=20`).
"""
