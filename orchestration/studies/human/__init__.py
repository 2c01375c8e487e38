"""A human preference study of an evaluation's samples (paper section 5.1), and its report.

    rglcd-study create --eval-dir EVAL_DIR --pairs A@2:B@50 --out STUDY_DIR
    rglcd-study serve STUDY_DIR        # raters open /?rater=r1
    rglcd-study report STUDY_DIR

(`rglcd-study` is `python -m orchestration.studies.human`.) design.py: pure: pair specs, study
items, each rater's seeded schedule; create.py: builds a study folder from `rglcd-evaluate`'s
outputs; storage.py: the answers' SQLite database; page.py: the HTML; app.py: the FastAPI
app; report.py: win rates, rater consistency, attention checks and agreement of people with
each reward model.
"""
