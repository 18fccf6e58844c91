"""`python -m study`: the study driver (`study.driver`)."""
from study.driver import main

main()
