"""`python -m replicate`: the study driver, kept under its first name (see `study.driver`).

    python -m replicate --preset smoke --fold A --out runs/smoke
"""
from study.driver import main

if __name__ == "__main__":
  main()
