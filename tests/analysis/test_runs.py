"""Run directories as records: what load_run reads back is what the run wrote, old run
directories load as the same record, and `archzoo table` rebuilds the run's table from disk."""

import json
import shutil

import pytest

from archzoo.analysis.runs import RECORD_FILE, RecordError, load_run, load_sweep
from archzoo.analysis.table import comparison_table
from archzoo.cli import main
from archzoo.train.config import load_run_configs
from archzoo.train.loop import train
from tests.train.test_runs import config, metrics


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Two finished runs under one directory, with what train() returned for each."""
    base = tmp_path_factory.mktemp("sweep")
    summaries = {}
    for family in ("decoder", "encoder_decoder"):
        cfg = load_run_configs(config(base, name=family, family=family))[0]
        summaries[family] = train(cfg)
    return base / "runs", summaries


def test_load_run_reads_back_what_the_run_wrote(finished):
    runs, summaries = finished
    record = load_run(runs / "decoder")
    assert record.summary == json.loads(json.dumps(summaries["decoder"]))  # as JSON stores it
    assert record.metrics == metrics(runs / "decoder", drop=())
    assert record.config["name"] == "decoder" and record.facts["family"] == "decoder"
    assert record.finished and record.evals == []
    assert [r.name for r in load_sweep(runs)] == ["decoder", "encoder_decoder"]


def test_a_run_directory_from_before_the_record_loads_as_the_same_record(finished, tmp_path):
    runs, _ = finished
    old = tmp_path / "old"
    shutil.copytree(runs / "decoder", old)
    record = json.loads((old / RECORD_FILE).read_text())
    (old / RECORD_FILE).unlink()
    (old / "facts.json").write_text(json.dumps(record["facts"]))
    (old / "summary.json").write_text(json.dumps(record["summary"]))
    new = load_run(runs / "decoder")
    loaded = load_run(old)
    assert (loaded.facts, loaded.summary, loaded.metrics, loaded.config) == (new.facts, new.summary, new.metrics, new.config)


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda r: r.pop("schema_version"), "field 'schema_version' is missing"),
        (lambda r: r.update(schema_version=99), "field 'schema_version' is 99"),
        (lambda r: r["facts"].pop("params"), "field facts.params is missing"),
        (lambda r: r["summary"].pop("steps"), "field summary.steps is missing"),
    ],
)
def test_a_broken_record_names_the_file_and_the_field(finished, tmp_path, damage, named):
    runs, _ = finished
    broken = tmp_path / "broken"
    shutil.copytree(runs / "decoder", broken)
    record = json.loads((broken / RECORD_FILE).read_text())
    damage(record)
    (broken / RECORD_FILE).write_text(json.dumps(record))
    with pytest.raises(RecordError) as e:
        load_run(broken)
    assert str(e.value).startswith(f"{broken / RECORD_FILE}: ") and named in str(e.value)


def test_a_directory_without_runs_is_named(tmp_path):
    with pytest.raises(RecordError, match="holds no run directory"):
        load_sweep(tmp_path)
    assert main(["table", str(tmp_path)]) == 2


def test_archzoo_table_prints_the_table_archzoo_run_printed(finished, capsys):
    runs, summaries = finished
    # the table written beside the runs by `archzoo run` is the one `archzoo table` rebuilds
    (runs.parent / "again").mkdir()
    path = config(runs.parent / "again", name="decoder")
    assert main(["run", str(path)]) == 0
    printed_by_run = capsys.readouterr().out.strip().splitlines()[-3:]
    assert main(["table", str(runs.parent / "again" / "runs" / "decoder")]) == 0
    assert capsys.readouterr().out.strip().splitlines() == printed_by_run
    # and its numbers are the runs' own
    assert main(["table", str(runs)]) == 0
    table = capsys.readouterr().out
    for family, s in summaries.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {family} "))
        assert f"{s['target_tokens']:,}" in row and f"{s['val_loss_nats']:.4f}" in row and f"{s['params']:,}" in row


def test_an_unfinished_run_shows_its_last_logged_step(finished, tmp_path):
    runs, _ = finished
    killed = tmp_path / "killed"
    shutil.copytree(runs / "decoder", killed)
    record = json.loads((killed / RECORD_FILE).read_text())
    record["summary"] = None
    (killed / RECORD_FILE).write_text(json.dumps(record))
    last = metrics(killed)[-1]
    row = comparison_table([load_run(killed)]).splitlines()[-1]
    assert f"not finished, step {last['step']}" in row and f"{last['target_tokens']:,}" in row
