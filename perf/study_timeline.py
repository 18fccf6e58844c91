"""A study's timeline from its files' modification times (1 s resolution): for each run,
when it began (seconds from the start model's provenance.json), its training and its
evaluations. For a study folder that came back from a machine as an archive (mtimes kept).

  python perf/study_timeline.py STUDY_DIR
"""
import json
import pathlib
import sys


def timeline(study: pathlib.Path) -> str:
  runs = sorted((p.stat().st_mtime, p.parent.name) for p in study.glob("runs/*/provenance.json"))
  t0 = min(t for t, name in runs if name == "start")
  lines = ["# seconds from the start model's provenance.json (file mtimes, 1 s resolution)"]
  for began, name in runs:
    run = study / "runs" / name
    summary = run / "train_summary.json"
    evals = [p.stat().st_mtime for p in run.glob("eval_*.json")]
    trained = summary.stat().st_mtime if summary.exists() else began
    train = f"{trained - began:4.0f} s" if summary.exists() else "   -  "
    done = f"{max(evals) - trained:4.0f} s" if evals else "   -  "
    lines.append(f"start {began - t0:+5.0f} s  {name:15s}  train {train}  evaluations {done}")
  results = study / "results.json"
  if results.exists():
    lines.append(f"results.json written at {results.stat().st_mtime - t0:+.0f} s")
    wall = json.loads(results.read_text()).get("wall_time_s")
    if wall:
      lines.append(f"wall_time_s (the study's own clock, start-up included): {wall:.1f}")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
    print(__doc__.strip())
    sys.exit(0 if sys.argv[1:] in (["-h"], ["--help"]) else 2)
  study = pathlib.Path(sys.argv[1])
  if not any(study.glob("runs/start/provenance.json")):
    sys.exit(f"{study}: no runs/start/provenance.json; is this a study folder?")
  print(timeline(study), end="")
