"""The study report: the end-of-study text table (:func:`study_report`), and a folder
``outputs/studies/NAME/report/`` with report.md and PNG plots (:func:`write_report`), written at
the end of every sweep and by ``mode=report`` (:func:`run_report`).

``facts`` computes the numbers (:func:`compute_of` is the one place that counts compute),
``plots`` draws them, ``markdown`` arranges sections (add one to ``markdown.SECTIONS``), ``write``
writes the folder atomically and saves the summary as the study's optuna-dashboard note."""

from sweeps.report.facts import StudyFacts, TokenGain, compute_of, facts_of, tokens_to_reach, trial_compute
from sweeps.report.markdown import SECTIONS, Section
from sweeps.report.table import study_report
from sweeps.report.write import report_at_end_of_sweep, run_report, write_report

__all__ = ["SECTIONS", "Section", "StudyFacts", "TokenGain", "compute_of", "facts_of", "report_at_end_of_sweep",
           "run_report", "study_report", "tokens_to_reach", "trial_compute", "write_report"]
