"""capgen-compare's seed groups and its paired bootstrap (--paired), on run folders written here
as capgen-train leaves them."""

import itertools
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from capgen.cli.compare import main
from capgen.commands.compare import as_markdown, as_text, compare, paired
from capgen.metrics.significance import paired_bootstrap
from capgen.runs.folders import find_runs
from capgen.runs.tested import TEST_CAPTIONS, write_test_captions

from helpers.runs import half_written, make_run_folder


def make_run(path: Path, overrides: list[str], metrics: dict | None = None, per_image: dict | None = None) -> Path:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text("seed: 42\n")
    OmegaConf.save(OmegaConf.create(overrides), path / ".hydra" / "overrides.yaml")
    if metrics is not None:
        (path / "summary.json").write_text(json.dumps({"status": "completed", "metrics": metrics}))
    if per_image is not None:
        write_test_captions(path, [{"image_id": i, "caption": "a red circle", "BLEU-4": b, "CIDEr": c, "logprob": -1.0}
                                   for i, (b, c) in per_image.items()])
    return path


# ----- seed groups ------------------------------------------------------------------------
def test_runs_that_differ_only_by_seed_share_a_row_with_mean_sd_and_n(tmp_path):
    attn = {1: 0.81, 2: 0.86, 3: 0.78}
    for seed, cider in attn.items():
        make_run(tmp_path / f"attn_{seed}", ["model=attn", f"seed={seed}"], {"test/CIDEr": cider, "val/CIDEr": cider + 0.1})
    make_run(tmp_path / "attn_4", ["model=attn", "seed=4"], {"val/CIDEr": 0.5})  # no test score: n = 3 for test/CIDEr
    make_run(tmp_path / "lstm_1", ["model=lstm", "seed=1"], {"test/CIDEr": 0.70, "val/CIDEr": 0.72})
    make_run(tmp_path / "attn_5", ["model=attn", "seed=5"])  # unfinished: its own row, last

    table = compare([tmp_path], ["test/CIDEr", "val/CIDEr"])
    assert table.header == ["model", "seed", "status", "test/CIDEr", "val/CIDEr", "run"]
    group, lstm, unfinished = table.rows
    values = list(attn.values())
    mean = sum(values) / 3  # 0.8166..., by hand in float64
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (3 - 1))  # sample sd: n - 1
    assert (mean, sd) == pytest.approx((statistics.mean(values), statistics.stdev(values)), rel=1e-15)
    assert group[:3] == ["attn", "1,2,3,4", "completed"]
    assert group[3] == f"{mean:.4f} ± {sd:.4f} (3)"
    val = [v + 0.1 for v in values] + [0.5]
    assert group[4] == f"{statistics.mean(val):.4f} ± {statistics.stdev(val):.4f} (4)"
    assert group[5] == "attn_1 attn_2 attn_3 attn_4"
    assert lstm == ["lstm", "1", "completed", "0.7000", "0.7200", "lstm_1"]  # a single run as before
    assert unfinished[:3] == ["attn", "5", "unfinished"] and unfinished[-1] == "attn_5"

    each = compare([tmp_path], ["test/CIDEr"], group_seeds=False)  # capgen-compare --each
    assert len(each.rows) == 6 and each.rows[0][-1] == "attn_2"
    assert "0.8167 ± 0.0404 (3)" in as_text(table)


# ----- the paired bootstrap ---------------------------------------------------------------
def test_identical_systems_differ_by_nothing():
    scores = np.random.default_rng(1).uniform(0, 2, size=50)
    result = paired_bootstrap({"CIDEr": scores}, {"CIDEr": scores.copy()})["CIDEr"]
    assert result.difference == 0 and result.low <= 0 <= result.high
    assert result.p_value == 1.0


def test_a_clearly_better_system_is_significant_and_a_noisy_tie_is_not():
    rng = np.random.default_rng(2)
    b = rng.uniform(0, 2, size=200)
    better = b + 0.3 + rng.normal(0, 0.5, size=200)  # +0.3 on average, noisy image by image
    result = paired_bootstrap({"CIDEr": better}, {"CIDEr": b}, resamples=2000, seed=3)["CIDEr"]
    assert result.difference == pytest.approx(np.mean(better - b))
    assert 0 < result.low < result.difference < result.high and result.p_value < 0.05
    assert result.p_value == 1 / 2001  # no resample's difference strayed as far as 0
    tie = b + rng.normal(0, 0.5, size=200)
    tied = paired_bootstrap({"CIDEr": tie}, {"CIDEr": b}, resamples=2000, seed=3)["CIDEr"]
    assert tied.low < 0 < tied.high and tied.p_value > 0.05


def test_bootstrap_p_value_and_interval_match_the_exact_bootstrap_distribution():
    # 4 images: all 4^4 = 256 equally likely resamples, enumerated.
    a, b = np.array([1.0, 0.4, 0.9, 0.3]), np.array([0.2, 0.5, 0.1, 0.4])
    d = a - b  # 0.8, -0.1, 0.8, -0.1: mean 0.35
    means = np.array([d[list(picks)].mean() for picks in itertools.product(range(4), repeat=4)])
    exact_p = np.mean(np.abs(means - d.mean()) >= abs(d.mean()) - 1e-12)
    result = paired_bootstrap({"m": a}, {"m": b}, resamples=100_000, seed=0)["m"]
    assert result.p_value == pytest.approx(exact_p, abs=0.005)  # Monte Carlo error ~0.001
    # the exact 2.5% and 97.5% points of 256 equally likely means: -0.1 (all four picks negative
    # has 1/16 probability) ... 0.8 (likewise)
    assert (result.low, result.high) == pytest.approx((-0.1, 0.8))
    again = paired_bootstrap({"m": a}, {"m": b}, resamples=100_000, seed=0)["m"]
    assert again == result  # the seed fixes the draws


# ----- --paired on run folders ------------------------------------------------------------
def test_paired_runs_and_seed_groups_compare_per_image_means_on_common_images(tmp_path):
    rng = np.random.default_rng(4)
    base = rng.uniform(0.2, 1.5, size=45)
    for seed in (1, 2, 3):
        make_run(tmp_path / "sweep" / f"attn_{seed}", ["model=attn", f"seed={seed}"], {},
                 {i: (0.3, float(base[i] + 0.4 + 0.01 * seed)) for i in range(40)})
    lstm = make_run(tmp_path / "lstm", ["model=lstm"], {}, {i: (0.2, float(base[i])) for i in range(5, 45)})

    result = paired(str(tmp_path / "sweep" / "attn_*"), str(lstm), resamples=1000)
    assert [len(s) for s in result.sides] == [3, 1] and result.images == (40, 40, 35)  # images 5..39 in common
    cider = result.results["CIDEr"]
    assert cider.difference == pytest.approx(0.42)  # the mean of +0.41, +0.42 and +0.43, the same on every image
    assert cider.mean_b == pytest.approx(np.mean(base[5:40]))
    assert cider.low == pytest.approx(0.42) and cider.p_value < 0.05
    assert result.results["BLEU-4"].difference == pytest.approx(0.1)
    # a folder of runs is read like the glob
    assert paired(str(tmp_path / "sweep"), str(lstm), resamples=1000).results == result.results

    make_run(tmp_path / "sweep" / "lstm_1", ["model=lstm", "seed=1"], {}, {0: (0.1, 0.1)})
    with pytest.raises(ValueError, match=r"its 4 runs differ by more than seed \(also by model\)"):
        paired(str(tmp_path / "sweep"), str(lstm))
    other = make_run(tmp_path / "other", [], {}, {100: (0.1, 0.1)})
    with pytest.raises(ValueError, match=r"tested on no image in common \(40 and 1 images\)"):
        paired(str(lstm), str(other))


def test_a_run_without_per_image_scores_names_the_file_and_what_writes_it(tmp_path, capsys):
    old = make_run(tmp_path / "old", ["model=rnn"], {"test/CIDEr": 0.5})
    new = make_run(tmp_path / "new", ["model=attn"], {"test/CIDEr": 0.6}, {1: (0.1, 0.5)})
    with pytest.raises(SystemExit) as stop:
        main(["--paired", str(new), str(old)])
    assert stop.value.code == 2
    message = capsys.readouterr().err
    assert f"{old / TEST_CAPTIONS} is missing" in message and "capgen-train writes it" in message
    assert "test=true" in message and len(message.strip().splitlines()) == 1  # one paragraph


@pytest.mark.parametrize("ended", ["interrupted", "failed", "completed", "interrupted, test=false"])
def test_a_run_without_per_image_scores_that_can_resume_is_told_the_resume_that_tests_it(tmp_path, ended):
    """A run with a last.ckpt is continued by resume=, which tests its best checkpoint when the
    training ends (a completed run's resume trains nothing more), not trained again; test=true
    is added where the run's own config leaves the test out."""
    status, _, test_false = ended.partition(", ")
    summary = {"status": status, "signal": "SIGTERM", "resume": "capgen-train resume=/elsewhere", "traceback": "error.txt",
               "error": "BadSampleError: image 3 is gone", "metrics": {"val/CIDEr": 0.3}}
    run = make_run_folder(tmp_path / "s 2", ["model=lstm"], summary)
    if test_false or status == "completed":
        (run / ".hydra" / "config.yaml").write_text("seed: 42\ntest: false\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    other = make_run(tmp_path / "s1", ["model=attn"], {}, {1: (0.1, 0.5)})
    with pytest.raises(ValueError) as err:
        paired(str(other), str(run))
    message = str(err.value)
    assert f"{run / TEST_CAPTIONS} is missing" in message and "\n" not in message
    resume = f"capgen-train resume='{run}'" + (" test=true" if test_false or status == "completed" else "")
    assert {"interrupted": f"interrupted (SIGTERM) before its test. Continue it with {resume}: it tests its best",
            "failed": f"traceback is in {run / 'error.txt'}). Fix the cause, then continue it with {resume}: it tests",
            "completed": f"{resume} tests its best checkpoint and writes it (the run is complete: its resume trains "
                         "nothing more)"}[status] in message
    assert "Train it again" not in message


def test_capgen_compare_paired_prints_both_sides_and_the_bootstrap(tmp_path, capsys):
    a = make_run(tmp_path / "a", ["model=attn"], {}, {i: (0.5, 1.0 + 0.1 * (i % 3)) for i in range(30)})
    b = make_run(tmp_path / "b", ["model=lstm"], {}, {i: (0.4, 0.8 + 0.1 * (i % 3)) for i in range(30)})
    main(["--paired", str(a), str(b), "--resamples", "500", "--seed", "7"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"A = {a}" and lines[1] == f"B = {b}"
    assert "over the 30 test images both were tested on (A 30, B 30), 500 resamples, seed 7" in lines[2]
    assert lines[3].split() == ["metric", "A", "B", "A-B", "95%", "interval", "p"]
    assert lines[4].split()[:4] == ["CIDEr", "1.1000", "0.9000", "+0.2000"]
    assert lines[5].split()[:4] == ["BLEU-4", "0.5000", "0.4000", "+0.1000"]
    with pytest.raises(SystemExit):
        main(["--paired", str(a), str(b), "--resamples", "0"])
    assert "--resamples 0: the bootstrap needs at least 1 resample" in capsys.readouterr().err


def test_a_resumed_run_stays_in_its_seed_group(tmp_path):
    # resume= (recorded in a resumed run's overrides) names where the run continued, not other settings.
    make_run(tmp_path / "attn_1", ["model=attn", "seed=1"], {"test/CIDEr": 0.8})
    make_run(tmp_path / "attn_2", ["model=attn", "seed=2", f"resume={tmp_path / 'attn_2'}"], {"test/CIDEr": 0.9})
    (group,) = compare([tmp_path], ["test/CIDEr"]).rows
    assert group[:2] == ["1,2", "completed"] and group[2].endswith("(2)")


# ----- unreadable records, failed and unfinished runs ----------------------------------------
def test_compare_lists_unreadable_records_as_such_and_shows_the_other_runs(tmp_path):
    done = {"status": "completed", "metrics": {"val/CIDEr": 0.8}, "best_checkpoint": None}
    make_run_folder(tmp_path / "0_lr=1", ["model.module.optimizer.lr=1"], done)
    torn = make_run_folder(tmp_path / "1_lr=2", ["model.module.optimizer.lr=2"])
    (torn / "summary.json").write_text(half_written(done))
    make_run_folder(tmp_path / "2_lr=3", ["model.module.optimizer.lr=3"], {"status": "exploded"})
    bad_yaml = make_run_folder(tmp_path / "3_lr=4", [], done)
    (bad_yaml / ".hydra" / "overrides.yaml").write_text("- model.module.optimizer.lr=4\n- [unclosed\n")
    make_run_folder(tmp_path / "4_lr=5", ["model.module.optimizer.lr=5"], {**done, "metrics": {"val/CIDEr": 0.9}})

    table = compare([tmp_path], ["val/CIDEr"])
    assert [r[-3:] for r in table.rows[:2]] == [["completed", "0.9000", "4_lr=5"], ["completed", "0.8000", "0_lr=1"]]
    assert len(table.rows) == 2  # unreadable runs are no rows (their settings make no columns): listed below
    assert table.notes[0].startswith(f"1_lr=2: unreadable: {torn / 'summary.json'}: cannot be read as JSON (")
    assert "2_lr=3: unreadable: " in table.notes[1] and "needs status completed, failed or interrupted" in table.notes[1]
    assert table.notes[2].startswith(f"3_lr=4: unreadable: {bad_yaml / '.hydra' / 'overrides.yaml'}: cannot be read as YAML")
    text = as_text(table).splitlines()
    assert text[text.index("runs that did not complete:") + 1].startswith("  1_lr=2: unreadable: ")
    assert f"- 1_lr=2: unreadable: {torn / 'summary.json'}" in as_markdown(table)


def test_compare_shows_varying_overrides_and_puts_failed_and_unfinished_runs_last(tmp_path):
    done = {"status": "completed", "metrics": {"val/CIDEr": 0.8, "test/CIDEr": 0.7}}
    for i in range(11):  # job 10 sorts after job 9
        make_run_folder(tmp_path / f"{i}_lr={i}", ["debug=fast", f"model.module.optimizer.lr={i}"], {**done, "metrics": {"val/CIDEr": i / 10, **({"test/CIDEr": 0.7} if i == 0 else {})}})
    make_run_folder(tmp_path / "11_lr=bad", ["debug=fast", "model.module.optimizer.lr=bad"], {"status": "failed", "error": "ValueError: bad lr"})
    make_run_folder(tmp_path / "12_lr=slow", ["debug=fast", "model.module.optimizer.lr=slow"])
    assert [p.name for p in find_runs(tmp_path)][9:11] == ["9_lr=9", "10_lr=10"]

    table = compare([tmp_path], ["val/CIDEr", "test/CIDEr"])
    assert table.common == ["debug=fast"]
    assert table.header == ["model.module.optimizer.lr", "status", "val/CIDEr", "test/CIDEr", "run"]
    assert table.rows[0] == ["10", "completed", "1.0000", "-", "10_lr=10"]
    assert [r[1] for r in table.rows[-2:]] == ["completed", "unfinished"]  # a failed run is no row: a note below
    assert "11_lr=bad: failed: ValueError: bad lr" in table.notes
    assert any(n.startswith("12_lr=slow: unfinished: no summary.json") for n in table.notes) and len(table.notes) == 2
    assert as_text(table).splitlines()[0] == "all runs: debug=fast"
    markdown = as_markdown(table)
    assert "| model.module.optimizer.lr | status | val/CIDEr | test/CIDEr | run |\n|---|---|---|---|---|\n| 10 | completed |" in markdown
    with pytest.raises(SystemExit, match="no capgen-train runs"):
        compare([tmp_path / "0_lr=0" / ".hydra"], ["val/CIDEr"])


def test_compare_on_a_mixed_folder_fits_120_columns_but_for_telling_runs_apart_and_lists_failed_runs_apart(tmp_path, capsys):
    from capgen.cli.compare import main as compare_main

    def run(name: str, overrides: list[str], summary: dict | None) -> None:
        path = tmp_path / "train" / name
        (path / ".hydra").mkdir(parents=True)
        (path / ".hydra" / "config.yaml").write_text("seed: 42\n")
        (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        if summary is not None:
            (path / "summary.json").write_text(json.dumps(summary))

    scores = {"val/CIDEr": 2.91, "val/BLEU-4": 0.61, "test/CIDEr": 2.87, "test/BLEU-4": 0.6}
    long_root = "data.root=/mnt/team/datasets/coco2014/a/very/long/path/that/goes/on/and/on"
    for job, (model, seed) in enumerate([("attn", 1), ("attn", 2), ("lstm", 1), ("lstm", 2)]):
        overrides = [f"model={model}", f"seed={seed}", "model.decoder.hidden_dim=512", long_root,
                     "trainer.max_epochs=2"]
        run(f"multirun_2025-01-01_12-00-00/{job}_" + ",".join(overrides).replace("/", "_"), overrides,
            {"status": "completed", "metrics": {k: v - 0.1 * job for k, v in scores.items()}})
    run("2025-01-02_09-00-00", ["model.decoder.hidden_dim=1024", long_root.replace("very", "rather"), "trainer.max_epochs=2"],
        {"status": "completed", "metrics": scores})
    run("2025-01-03_09-00-00", ["+model.decoder.hiden_dim=3"],
        {"status": "failed", "error": "TypeError: " + "AttentionDecoder.__init__() got an unexpected keyword " * 5,
         "traceback": "error.txt"})

    compare_main([str(tmp_path / "train")])
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if " status " in line)
    table = lines[lines.index(header):lines.index("runs that did not complete:")]
    # The two sweep rows differ only at their job number, 30 characters in: the run column is not
    # cut before it (so the table is 10 wider than 120), every other line fits.
    assert [row.split()[-1] for row in table[1:]] == \
        ["2025-01-02_09-00-00", "multirun_2025-01-01_12-00-00/0…", "multirun_2025-01-01_12-00-00/2…"]
    assert max(len(line) for line in table) == 130 and all(len(line) <= 120 for line in lines if line not in table)
    # Only what differs among the rows shown: not the failed run's misspelt key, not max_epochs.
    assert header.split()[:4] == ["data.ro…", "model", "hidden_…", "seed"] and "hiden_dim" not in "\n".join(lines[:-2])
    assert lines[0] == "all runs: trainer.max_epochs=2"
    # The long paths shown from where they differ: their shared start is cut, not their difference.
    assert [row.split()[0][:7] for row in lines[3:6]] == ["…rather", "…very/l", "…very/l"]
    assert "columns: hidden_dim = model.decoder.hidden_dim" in lines
    failed = lines.index("runs that did not complete:")
    assert lines[failed + 1].startswith("  2025-01-03_09-00-00: failed: TypeError: AttentionDecoder") and \
        lines[failed + 1].endswith("…")
    assert not any("failed" in line for line in lines[:failed])  # not a row of the table
    rows = lines[lines.index(next(line for line in lines if " status " in line)) + 1:failed]
    assert len(rows) == 3 and all("completed" in row for row in rows)  # attn (2 seeds), lstm (2 seeds), one run


# ----- failures of the machine -----------------------------------------------------------


def test_capgen_compare_markdown_into_a_missing_or_read_only_folder_is_one_line_before_any_work(read_only, tmp_path, capsys):
    from capgen.cli.compare import main

    for target, says in ((tmp_path / "missing" / "runs.md", "its folder .*missing does not exist; create it"),
                         (read_only / "runs.md", "ro is on a read-only file system"), (tmp_path, "a folder; give a file")):
        with pytest.raises(SystemExit) as err:
            main([str(tmp_path), "--markdown", str(target)])
        assert err.value.code == 2
        import re

        assert re.search(r"capgen-compare: error: --markdown .*" + says, capsys.readouterr().err)


# ----- what counts as a run -------------------------------------------------------------------
def test_the_folders_of_other_commands_are_no_rows_columns_or_notes(tmp_path):
    make_run(tmp_path / "train" / "a", ["model=lstm"], {"val/CIDEr": 0.5})
    make_run(tmp_path / "train" / "b", ["model=attn"], {"val/CIDEr": 0.6})
    evaluation = make_run(tmp_path / "eval" / "2026-12-05_13-30-05", ["run=train/a", "decode.beam_size=5"])
    (evaluation / ".hydra" / "hydra.yaml").write_text("hydra:\n  job:\n    name: eval\n    config_name: eval\n")
    table = compare([tmp_path], ["val/CIDEr"])
    assert table.header == ["model", "status", "val/CIDEr", "run"] and table.notes == []
    assert [row[-1] for row in table.rows] == ["b", "a"]
    with pytest.raises(SystemExit, match=r"no capgen-train runs under .*/eval .*capgen-eval, caption, demo and prepare folders are not runs"):
        compare([tmp_path / "eval"], ["val/CIDEr"])


def test_the_run_column_is_cut_no_further_than_tells_the_rows_apart(tmp_path):
    # The run folder is the only thing naming a row: cut from its end it read "2026-12…" in every row.
    scores = {"val/CIDEr": 0.8, "val/BLEU-4": 0.2, "test/CIDEr": 0.5, "test/BLEU-4": 0.2}
    for i, name in enumerate(["2026-12-05_13-26-52", "2026-12-05_13-27-27"]):
        make_run(tmp_path / name, [f"data.root=/mnt/team/datasets/coco2014/{i}"], {k: v - i / 10 for k, v in scores.items()})
    rows = as_text(compare([tmp_path]), width=80).splitlines()[1:]
    assert [row.split()[-1] for row in rows] == ["…26-52", "…27-27"]  # their shared start cut, at a separator
    make_run(tmp_path / "2026-12-06_09-00-00", ["data.root=/mnt/team/datasets/coco2014/2"], {"val/CIDEr": 0.1})
    rows = as_text(compare([tmp_path]), width=40).splitlines()[1:]
    assert [row.split()[-1] for row in rows] == ["…5_13-26…", "…5_13-27…", "…6_09-00…"]  # not "…5_13-2…" twice


def test_a_misspelt_metric_is_refused_with_the_close_match_and_the_names_the_runs_have(tmp_path, capsys):
    make_run(tmp_path / "a", ["model=lstm"], {"val/CIDEr": 0.5, "val/loss": 2.0})  # tested without the test split
    make_run(tmp_path / "b", ["model=attn"], {"val/CIDEr": 0.6, "val/loss": 1.9})
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path), "--metrics", "val/cider", "val/loss"])
    assert stop.value.code == 2
    message = capsys.readouterr().err
    assert message == (f"capgen-compare: error: --metrics val/cider: no run under {tmp_path} has this metric in its "
                       "summary.json (did you mean val/CIDEr?); they have val/CIDEr, val/loss. Give the names as listed "
                       "(case matters).\n")
    # The default metrics are not checked: these runs have no test/* cells, and that is no error.
    assert compare([tmp_path]).rows[0] == ["attn", "completed", "0.6000", "-", "-", "-", "b"]


def test_a_moved_interrupted_run_is_continued_from_where_it_is_now(tmp_path):
    """summary.json names the folder the run was interrupted in; copied elsewhere (with a space
    and a comma), the note gives the command for the copy, quoted for the shell."""
    from capgen.commands.compare import load_run

    moved = make_run_folder(tmp_path / "copy 2,y", ["model=rnn"], {
        "status": "interrupted", "signal": "SIGTERM", "checkpoint": "checkpoints/last.ckpt",
        "resume": "capgen-train resume=/elsewhere/int1", "best_checkpoint": "checkpoints/epoch001-best0.327.ckpt",
        "metrics": {"val/CIDEr": 0.327}})
    run = load_run(moved)
    assert run.status == "interrupted" and run.metrics == {"val/CIDEr": 0.327}
    assert run.error == ("SIGTERM; best so far: checkpoints/epoch001-best0.327.ckpt; continue with "
                        f"capgen-train resume='{moved}'")
    # Below the table, the command stays whole even where the line is longer than the table's width.
    from capgen.commands.compare import as_text, compare

    lines = as_text(compare([moved]), width=60).splitlines()
    assert lines[lines.index("runs that did not complete:") + 1].endswith(f"capgen-train resume='{moved}'")


def test_a_failed_run_with_a_best_epoch_is_a_row_with_its_scores_and_says_how_to_continue(tmp_path, monkeypatch):
    """A run that failed after it validated (its data broke in a later epoch, say) recorded its
    best checkpoint and scores as an interrupted run does: a row of its own, status failed, after
    the completed runs; the line below names the checkpoint and the resume for once the cause is
    fixed, then the error, which can be long: a cut at the table's width takes the error first."""
    monkeypatch.chdir(tmp_path)  # the runs named as a user names them: capgen-compare outputs
    error = "capgen.data.images.BadSampleError: image 17 (val): " + "cannot be read, the file is gone " * 6
    done = {"status": "completed", "metrics": {"val/CIDEr": 0.2, "test/CIDEr": 0.19}, "best_checkpoint": "checkpoints/b.ckpt"}
    make_run_folder(Path("outputs/int1"), ["model=lstm", "seed=1"], done)
    failed = make_run_folder(Path("outputs/fail 2"), ["model=lstm", "seed=2"], {
        "status": "failed", "error": error, "traceback": "error.txt",
        "best_checkpoint": "checkpoints/epoch001-best0.313.ckpt", "metrics": {"val/CIDEr": 0.313, "train/loss": 2.5}})
    (failed / "checkpoints").mkdir()
    (failed / "checkpoints" / "last.ckpt").write_bytes(b"")
    # failed at start: nothing recorded, its setting (a misspelt key) makes no column
    make_run_folder(Path("outputs/typo"), ["model=lstm", "+model.decoder.hiden_dim=3"],
                    {"status": "failed", "error": "ValueError: hiden_dim", "traceback": "error.txt"})

    table = compare([Path("outputs")], ["val/CIDEr", "test/CIDEr"])
    assert table.header == ["seed", "status", "val/CIDEr", "test/CIDEr", "run"]
    # no seed group with the completed run, and after it: its scores are a best so far, not a result
    assert table.rows == [["1", "completed", "0.2000", "0.1900", "int1"], ["2", "failed", "0.3130", "-", "fail 2"]]
    assert table.notes == [f"fail 2: failed: best so far: checkpoints/epoch001-best0.313.ckpt; fix the cause, then "
                           f"continue with capgen-train resume='outputs/fail 2'; error: {error}",
                           "typo: failed: ValueError: hiden_dim"]
    note = next(line for line in as_text(table, width=200).splitlines() if line.startswith("  fail 2:"))
    assert len(note) == 200 and note.endswith("…") and "resume='outputs/fail 2'; error: capgen.data.images.Bad" in note
    # At the default width the command is still whole (the line longer than the table): what follows is cut to 20 characters.
    note = next(line for line in as_text(table).splitlines() if line.startswith("  fail 2:"))
    assert note.endswith("resume='outputs/fail 2'; error: capgen.data.…")
    (failed / "checkpoints" / "last.ckpt").unlink()  # nothing to continue from: the checkpoint and the error
    assert compare([Path("outputs")]).notes[0] == f"fail 2: failed: best so far: checkpoints/epoch001-best0.313.ckpt; error: {error}"


def test_a_run_interrupted_before_its_first_checkpoint_is_given_the_command_that_starts_it_again(tmp_path):
    """Nothing to resume: its command line, quoted for the shell, its paths as typed, in its own
    folder where that was named (as capgen-train's own last lines say, capgen.commands.train.next_steps)."""
    early = make_run_folder(tmp_path / "early run", ["model=lstm", "data.source.sizes={train:8,val:4,test:4}",
                                                     "data.root='/data/my pets'"],
                            {"status": "interrupted", "signal": "SIGINT", "checkpoint": None})
    (early / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  overrides:\n    hydra:\n    - hydra.run.dir={early}\n")
    command = (f"capgen-train model=lstm 'data.source.sizes={{train:8,val:4,test:4}}' 'data.root=/data/my pets' "
               f"'hydra.run.dir={early}'")
    table = compare([early])
    assert table.notes == [f"early run: interrupted: SIGINT; stopped before its first checkpoint; start it again: {command}"]
    lines = as_text(table, width=60).splitlines()
    assert lines[lines.index("runs that did not complete:") + 1].endswith(command)  # whole, past the width


def test_a_run_whose_resume_failed_keeps_its_row_and_the_failed_resume_is_listed_with_its_command(tmp_path):
    """A resume that failed before it changed a checkpoint left the run as it was (capgen.runs.records):
    the run is still a completed row; below the table, the resume's error and its command to run again."""
    command = f"capgen-train resume={tmp_path / 'a'} trainer.max_epochs=4"
    failed = {"error": "FileNotFoundError: data root /d does not exist " + "and more " * 20,
              "traceback": "error.resume-2026-01-02_03-04-05.txt", "command": command}
    make_run_folder(tmp_path / "a", ["model=lstm"], {"status": "completed", "metrics": {"val/CIDEr": 0.5},
                                                     "resume_failed": failed})
    make_run_folder(tmp_path / "b", ["model=attn"], {"status": "completed", "metrics": {"val/CIDEr": 0.4}})
    table = compare([tmp_path], ["val/CIDEr"])
    assert [row[1:] for row in table.rows] == [["completed", "0.5000", "a"], ["completed", "0.4000", "b"]]
    assert table.notes == []  # it completed
    assert table.failed_resumes == [f"a: fix the cause, then run it again: {command}; error: {failed['error']}"]
    lines = as_text(table, width=100).splitlines()
    at = lines.index("resumes that failed (each run is as it was before it, its status and scores its own):")
    assert lines[at + 1].startswith(f"  a: fix the cause, then run it again: {command}; error: File")
    assert lines[at + 1].endswith("…")  # the error cut, the command whole
    assert f"- a: fix the cause, then run it again: {command}" in as_markdown(table)


def test_a_key_set_again_at_resume_is_one_column_with_its_value_now(tmp_path):
    from capgen.commands.compare import load_run

    done = {"status": "completed", "metrics": {"val/CIDEr": 0.5}, "best_checkpoint": None}
    run = make_run_folder(tmp_path / "r", ["+trainer.accumulate_grad_batches=2", "model=rnn",
                                           "trainer.accumulate_grad_batches=4", "resume=/x"], done)
    assert load_run(run).overrides == {"+trainer.accumulate_grad_batches": "4", "model": "rnn"}


def test_a_resume_with_test_false_that_kept_the_test_scores_is_no_test_false_column(tmp_path):
    # `capgen-train resume=<run> test=false` keeps the test/* of a best checkpoint it did not replace
    # (capgen.runs.tested): that row was tested, and test=false is no difference from the other runs.
    make_run(tmp_path / "a", ["model=attn"], {"val/CIDEr": 0.5, "test/CIDEr": 0.4})
    make_run(tmp_path / "b", ["model=lstm", "resume=/x", "test=false"], {"val/CIDEr": 0.6, "test/CIDEr": 0.3})
    table = compare([tmp_path])
    assert table.header[0] == "model" and "test" not in table.header and table.common == []
    # A run whose test=false left it without test scores keeps the setting, the reason its cells are empty.
    make_run(tmp_path / "c", ["model=lstm", "test=false"], {"val/CIDEr": 0.7})
    table = compare([tmp_path])
    assert table.header[:2] == ["model", "test"]
    assert [row[1] for row in table.rows] == ["false", "-", "-"]
