"""Reading run directories and what they hold: run records, sweep tables, scaling-law fits and
plots (DESIGN.md §7, §12), and task evaluation of their models (``scoring``, ``evaluate``).
The record, table, fit and plot modules import neither JAX nor :mod:`archzoo.train`; scoring
loads a run's model and checkpoint, and imports both when it does."""
