"""`archzoo plot SWEEP_DIR`: draws what it can from the run directories, prints the fits,
crossovers and what it could not fit; a directory with no finished runs or no runs at all is
said so, with an exit status."""

import numpy as np

from archzoo.analysis.fits import fit_power_law
from archzoo.analysis.runs import load_sweep
from archzoo.cli import main

from tests.analysis.test_plots import SIZES, write_family, write_run


def test_plot_draws_a_two_family_sweep_and_prints_its_fits_and_crossover(tmp_path, capsys):
    rng = np.random.default_rng(0)
    write_family(tmp_path / "sweep", "causal decoder", rng)
    write_family(tmp_path / "sweep", "prefix decoder", rng)
    assert main(["plot", str(tmp_path / "sweep"), "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    names = {p.name for p in (tmp_path / "sweep" / "plots").iterdir()}
    for figure in ("loss_vs_params", "loss_vs_tokens", "loss_vs_flops", "frontier", "curves_tokens", "curves_flops"):
        assert {f"{figure}.png", f"{figure}.svg"} <= names
    # the exponent printed for the causal decoder over N is the fit of its runs' final losses
    runs = [r for r in load_sweep(tmp_path / "sweep") if r.facts["mask"] == "causal"]
    fit = fit_power_law([r.facts["non_embedding_params"] for r in runs], [r.summary["val_loss_nats"] for r in runs], bootstrap=0)
    line = next(line for line in out.splitlines() if line.strip().startswith("causal decoder") and " N " in line)
    assert f"{fit.b:.3g}" in line
    assert "Crossovers" in out and "prefix decoder" in out.split("Crossovers", 1)[1]


def test_plot_of_one_family_draws_it_and_says_there_is_no_crossover(tmp_path, capsys):
    write_family(tmp_path / "sweep", "encoder-decoder", np.random.default_rng(1))
    assert main(["plot", str(tmp_path / "sweep"), "--out", str(tmp_path / "figs"), "--bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "figs" / "loss_vs_flops.png").stat().st_size > 0
    assert "Crossovers" not in out and "one family" in out.lower()


def test_plot_with_no_finished_run_writes_nothing_and_says_why(tmp_path, capsys):
    rng = np.random.default_rng(2)
    law = lambda N, D: 2.0 + 1e3 * N**-0.3  # noqa: E731
    for N in SIZES[:3]:
        write_run(tmp_path / "sweep", f"r{N:.0f}", N=N, D=20 * N, loss_of=law, rng=rng, summary=None)
    assert main(["plot", str(tmp_path / "sweep")]) == 1
    out = capsys.readouterr().out
    assert "no finished run" in out.lower() and not (tmp_path / "sweep" / "plots").exists()


def test_plot_of_a_directory_without_runs_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty")]) == 2
    assert "holds no run directory" in capsys.readouterr().err
