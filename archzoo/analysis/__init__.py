"""Reading run directories and fitting what they hold: run records, sweep tables, scaling-law
fits (DESIGN.md §7, §12). Nothing here imports :mod:`archzoo.train`."""
