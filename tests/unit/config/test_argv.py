"""Each command's command line before Hydra reads it: paths quoted so that folders named by a sweep's
overrides stay one path, paths.output_dir as the run folder, and resume= as the run's own overrides."""


import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from capgen.config.argv import output_dir_as_run_dir, quote_paths
from capgen.config.resume_argv import resume_argv

from helpers.runs import compose_command

# What sweeps and users name folders: a job folder, spaces, a glob, quotes.
AWKWARD = ["multirun/2026-11-25/1_model=lstm,model.decoder.hidden_dim=512", "my photos/a b.jpg",
           "photos/*.jpg", "it's here/x.ckpt", 'say "hi"/x.ckpt', "plain/last.ckpt"]


@pytest.mark.parametrize("path", AWKWARD)
def test_a_quoted_path_parses_back_to_itself_as_one_value(path):
    (arg,) = quote_paths([f"ckpt_path={path}"], ["ckpt_path"])
    (override,) = OverridesParser.create().parse_overrides([arg])
    assert override.key_or_group == "ckpt_path" and not override.is_sweep_override()
    assert override.value() == path


def test_only_the_named_keys_are_quoted_and_quoted_values_are_left_alone():
    args = ["-m", "model=rnn,lstm", "run=a=b", "ckpt_path='already=quoted'", "images=", "seed=1", "init_from=null"]
    assert quote_paths(args, ["run", "ckpt_path", "images", "init_from"]) == \
        ["-m", "model=rnn,lstm", "run='a=b'", "ckpt_path='already=quoted'", "images=", "seed=1", "init_from=null"]


def test_a_path_with_both_quote_characters_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="rename the folder"):
        quote_paths(["""resume=a'b"c"""], ["resume"])


def test_resume_of_a_sweep_job_folder_keeps_the_folder_whole(tmp_path, monkeypatch):
    # The checkpoint check itself is tested on real runs (tests/e2e/train/test_resume_faults.py).
    monkeypatch.setattr("capgen.config.resume_argv.check_resume", lambda run, own, given, check_values=None: None)
    run = tmp_path / "sweep" / "1_model=lstm,trainer.max_epochs=2"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- model=lstm\n- trainer.max_epochs=2\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    args = resume_argv(quote_paths([f"resume={run}", "trainer.max_epochs=4"], ["resume", "ckpt_path"]))
    assert args[:2] == ["model=lstm", "trainer.max_epochs=2"] and args[-1] == f'hydra.run.dir="{run}"'
    parsed = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(args)}
    assert parsed["resume"] == str(run) and parsed["hydra.run.dir"] == str(run)
    assert args.index("trainer.max_epochs=4") > args.index("trainer.max_epochs=2")  # the one given now comes last
    assert any((run / ".hydra").glob("before-resume-*/overrides.yaml"))  # the old config kept aside


def test_paths_output_dir_names_the_run_folder_hydra_makes():
    # Alone it would leave the run's .hydra/ config in a dated folder elsewhere (what capgen-eval run= reads).
    folder = "runs/1_model=lstm,seed=2"
    args = output_dir_as_run_dir(["model=lstm", f"paths.output_dir={folder}"])
    assert args[0] == "model=lstm" and "paths.output_dir" not in " ".join(args)
    (override,) = OverridesParser.create().parse_overrides(args[1:])
    assert override.key_or_group == "hydra.run.dir" and override.value() == folder
    assert output_dir_as_run_dir([f"paths.output_dir={folder}", f"hydra.run.dir={folder}"])[-1] == args[-1]
    assert output_dir_as_run_dir(["model=lstm"]) == ["model=lstm"]


@pytest.mark.parametrize("args, says", [
    (["-m", "seed=1,2", "paths.output_dir=runs/a"], "hydra.sweep.dir=runs/a"),
    (["paths.output_dir=runs/a", "hydra.run.dir=runs/b"], "name two run folders"),
])
def test_paths_output_dir_in_a_sweep_or_beside_another_run_dir_is_refused(args, says):
    with pytest.raises(SystemExit, match=says):
        output_dir_as_run_dir(args)


def test_resume_argv_reuses_the_runs_overrides_and_folder_and_keeps_its_config(tmp_path, monkeypatch):
    # The checkpoint check itself is tested on real runs (tests/e2e/train/test_resume_faults.py).
    monkeypatch.setattr("capgen.config.resume_argv.check_resume", lambda run, own, given, check_values=None: None)
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    OmegaConf.save(OmegaConf.create(["model=lstm", "trainer.max_epochs=2", "ckpt_path=/old.ckpt"]),
                   run / ".hydra" / "overrides.yaml")
    (run / ".hydra" / "config.yaml").write_text("seed: 42\n")
    args = resume_argv([f"resume={run}", "trainer.max_epochs=4"])
    # The run's own settings first, the new ones after (later wins), the run's folder last.
    assert args == ["model=lstm", "trainer.max_epochs=2", f"resume={run}", "trainer.max_epochs=4",
                    f'hydra.run.dir="{run}"']
    [kept] = (run / ".hydra").glob("before-resume-*")
    assert (kept / "config.yaml").read_text() == "seed: 42\n"
    # Lightning's second DDP process re-runs the rewritten command: left as it is.
    child = [*args, "hydra.job.name=train_ddp_process_1"]
    assert resume_argv(child) == child


def test_a_resume_keeps_its_command_as_typed_for_the_note_of_its_failure(tmp_path, monkeypatch):
    """The command a failed resume says to run again (capgen.runs.records): as the user typed it,
    not as quoted for Hydra, the run folder in full."""
    monkeypatch.setattr("capgen.config.resume_argv.check_resume", lambda run, own, given, check_values=None: None)
    kept = {}
    monkeypatch.setattr("capgen.config.resume_argv.keep_before_resume", lambda run, command: kept.update(command=command))
    run = tmp_path / "run x"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    (run / ".hydra" / "overrides.yaml").write_text("- model=lstm\n")
    monkeypatch.chdir(tmp_path)
    typed = ["resume=run x", "trainer.max_epochs=4", "data.root=~/pets dir"]
    resume_argv(quote_paths(typed, ["resume", "data.root"]), typed=typed)
    assert kept["command"] == f"capgen-train 'resume={run}' trainer.max_epochs=4 'data.root=~/pets dir'"


def test_a_key_the_run_added_with_plus_may_be_given_with_plus_again_at_resume(tmp_path, monkeypatch):
    checked = {}
    monkeypatch.setattr("capgen.config.resume_argv.check_resume",
                        lambda run, own, given, check_values=None: checked.update(own=own, given=given))
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    OmegaConf.save(OmegaConf.create(["+trainer.accumulate_grad_batches=2", "+trainer.detect_anomaly=false"]),
                   run / ".hydra" / "overrides.yaml")
    args = resume_argv([f"resume={run}", "+trainer.accumulate_grad_batches=4", "++trainer.detect_anomaly=true",
                        "+trainer.benchmark=false"])
    assert args == ["+trainer.accumulate_grad_batches=2", "+trainer.detect_anomaly=false", f"resume={run}",
                    "trainer.accumulate_grad_batches=4", "++trainer.detect_anomaly=true", "+trainer.benchmark=false",
                    f'hydra.run.dir="{run}"']
    assert checked["given"] == [f"resume={run}", "trainer.accumulate_grad_batches=4", "++trainer.detect_anomaly=true",
                                "+trainer.benchmark=false"]
    # what Hydra makes of it: the values given now, no "Could not append to config"
    cfg = compose_command("train", *[a for a in args if not a.startswith(("resume=", "hydra."))])
    assert (cfg.trainer.accumulate_grad_batches, cfg.trainer.detect_anomaly, cfg.trainer.benchmark) == (4, True, False)


# ----- failures of the machine -----------------------------------------------------------


@pytest.mark.parametrize("command, args, says", [
    ("train", [], r"^capgen-train: cannot make the run folder .*/ro/outputs/train: .*/ro is on a read-only file system"),
    ("train", ["resume={ro}/run"], r"^capgen-train: resume=.*/ro/run: .*read-only file system.* Nothing was changed\. "
                                   r"Copy the run to a writable place"),
    ("train", ["hydra.run.dir={ro}/a/b"], r"^capgen-train: cannot make the run folder .*/ro/a/b"),
    ("eval", ["ckpt_path=x.ckpt"], r"^capgen-eval: cannot make the run folder .*/ro/outputs/eval"),
    ("caption", ["ckpt_path=x.ckpt", "images=y"], r"^capgen-caption: cannot make the run folder"),
    ("prepare", ["cache_dir=/tmp/c"], r"^capgen-prepare: cannot make the run folder"),
    ("train", ["-m", "hydra.sweep.dir={ro}/sweep", "seed=1,2"], r"^capgen-train: cannot make the run folder .*/ro/sweep"),
])
def test_a_run_folder_on_a_read_only_mount_is_one_paragraph_before_hydra_writes(read_only, monkeypatch, command, args, says):
    from capgen.config.argv import require_writable_run_folder

    monkeypatch.chdir(read_only)
    (read_only / "run").mkdir()
    with pytest.raises(SystemExit) as err:
        require_writable_run_folder([a.format(ro=read_only) for a in args], command)
    import re

    assert re.search(says, str(err.value)) and "\n" not in str(err.value), err.value
    require_writable_run_folder([f"hydra.run.dir={read_only.parent / 'rw'}"], command)  # a writable folder passes


@pytest.mark.parametrize("args, folder", [(["hydra.run.dir={f}/run"], "{f}/run"), (["hydra.run.dir={f}"], "{f}"),
                                          (["-m", "hydra.sweep.dir={f}/sweep", "seed=1,2"], "{f}/sweep")])
def test_a_file_in_the_way_of_the_run_folder_is_one_paragraph_before_hydra_writes(tmp_path, args, folder):
    from capgen.config.argv import require_writable_run_folder

    afile = tmp_path / "afile"
    afile.write_text("mine")
    with pytest.raises(SystemExit) as err:
        require_writable_run_folder([a.format(f=afile) for a in args], "train")
    assert str(err.value) == (
        f"capgen-train: cannot make the run folder {folder.format(f=afile)}: {afile} is a file, not a folder, and every "
        "run writes its config, log and results there. Give a writable folder with hydra.run.dir=<folder> (or "
        "paths.output_dir=<folder>), or run from a writable working directory.")
    assert afile.read_text() == "mine"
    require_writable_run_folder([f"resume={afile}"], "train")  # resume_argv names it as no run folder


def _run_folder(run, summary: str | None = None, checkpoint: str | None = None):
    """A run folder as capgen-train leaves it: .hydra/config.yaml, then what the run got to write."""
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 42\n")
    if summary:
        (run / "summary.json").write_text(f'{{"status": "{summary}"}}')
    if checkpoint:
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / checkpoint).write_bytes(b"")
    return run


@pytest.mark.parametrize("summary, checkpoint", [("completed", "epoch001-best0.798.ckpt"), (None, "last.ckpt"),
                                                 ("completed", None), ("interrupted", "last.ckpt")])
def test_a_new_run_into_a_folder_holding_a_run_is_refused_naming_both_ways_out(tmp_path, summary, checkpoint):
    from capgen.config.argv import require_new_run_folder

    run = _run_folder(tmp_path / "ow", summary, checkpoint)
    with pytest.raises(SystemExit) as err:
        require_new_run_folder(["debug=fast", f"hydra.run.dir={run}"], run)
    message = str(err.value)
    assert message.startswith(f"capgen-train: hydra.run.dir={run} already holds a run (.hydra/config.yaml"), message
    assert f"capgen-train resume={run} " in message and "hydra.run.dir=<new folder>" in message and "\n" not in message
    require_new_run_folder([f"resume='{run}'", "trainer.max_epochs=4"], run)  # a resume continues it there


@pytest.mark.parametrize("summary", [None, "interrupted", "failed"])
def test_a_run_stopped_before_its_first_checkpoint_may_be_started_again_in_its_folder(tmp_path, summary):
    # resume= refuses it ("start it again without resume="); the soak restarts it so (tests/e2e/train/test_soak.py)
    from capgen.config.argv import require_new_run_folder

    run = _run_folder(tmp_path / "early", summary)
    (run / "checkpoints").mkdir()  # made before any checkpoint is written into it
    require_new_run_folder([f"hydra.run.dir={run}"], run)


def test_a_list_of_paths_stays_a_list_of_whole_paths(tmp_path, monkeypatch):
    """ckpt_path=[a,b] (an ensemble) reaches Hydra as a list; a sweep job's folder inside it, commas
    and all, stays one item, and an item that names nothing is its own (the command names it)."""
    monkeypatch.chdir(tmp_path)
    job = tmp_path / "multirun" / "1_model=lstm,seed=2"
    job.mkdir(parents=True)
    (job / "last.ckpt").write_bytes(b"")
    (tmp_path / "a.ckpt").write_bytes(b"")
    value = f"[a.ckpt,{job}/last.ckpt, gone.ckpt]"
    (arg,) = quote_paths([f"ckpt_path={value}"], ["ckpt_path"], ["ckpt_path"])
    (override,) = OverridesParser.create().parse_overrides([arg])
    assert not override.is_sweep_override() and override.value() == ["a.ckpt", f"{job}/last.ckpt", "gone.ckpt"]
    # Not a key that takes lists: the value stays one quoted path, brackets and all.
    (arg,) = quote_paths(["resume=[a.ckpt,b]"], ["resume"], ["ckpt_path"])
    assert OverridesParser.create().parse_overrides([arg])[0].value() == "[a.ckpt,b]"


@pytest.mark.parametrize("command, key, ensemble", [("eval", "run", True), ("train", "resume", False)])
def test_a_sweep_over_paths_is_refused_naming_one_command_per_path(tmp_path, monkeypatch, command, key, ensemble):
    """`capgen-eval -m run=a,b`: the value is taken whole, as one path that does not exist; with a
    and b both there, the refusal says so, before Hydra writes, instead of "no such folder"."""
    from capgen.config.command_line import command_line

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAPGEN_LAUNCH_TIME", "0")
    for run in ("a", "b", "1_model=lstm,seed=2"):
        (tmp_path / run).mkdir()
    with pytest.raises(ValueError, match=r"a,b: no such path, but a and b each exist\. .* cannot be swept over: give "
                                         rf"one command per path, e\.g\. for p in a b; do capgen-{command} {key}=\"\$p\" \.\.\.; done"
                                         + (rf", or {key}=\[a,b\] to use them together, as an ensemble\." if ensemble else r"\.")
                                         + r" Nothing was written\.$") as refused:
        command_line(command, ["-m", f"{key}=a,b"])
    assert not (tmp_path / "outputs").exists()
    assert refused.value.args[0].startswith(f"{key}=a,b:")
    # Left to the command as before: a job folder whose name holds a comma, and a part that names nothing.
    assert quote_paths(["run=1_model=lstm,seed=2"], ["run"]) == ["run='1_model=lstm,seed=2'"]
    from capgen.config.argv import refuse_swept_paths

    refuse_swept_paths(["run=1_model=lstm,seed=2", "run=a,gone", "run=[a,b]", "run='a,b'"], ["run"], ["run"], "eval")
    command_line("demo", ["run=a,b"])  # capgen-demo's models side by side: several paths by design


def test_an_ensembles_data_choice_is_its_first_checkpoints_runs(tmp_path):
    from capgen.config.argv import with_run_data_choice

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    OmegaConf.save(OmegaConf.create({"data": {}}), run / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": {"data": "shapes"}}}}), run / ".hydra" / "hydra.yaml")
    args = quote_paths([f"ckpt_path=[{run}/checkpoints/last.ckpt,{tmp_path}/other.ckpt]"], ["ckpt_path"], ["ckpt_path"])
    assert with_run_data_choice(args) == [*args, "data=shapes"]


def test_a_lone_checkpoints_data_choice_given_data_settings_is_the_one_it_records(tmp_path):
    """Hydra checks data.* against the data config it composes: data.source.split_seed=3 for a
    data=custom checkpoint without its run folder would be refused as a key shapes lacks."""
    from capgen.config.argv import with_run_data_choice

    from helpers.fakes import write_checkpoint

    ckpt = write_checkpoint(tmp_path / "a.ckpt", training_data={"data": "custom", "source": "capgen.data.custom.CustomSource"})
    args = quote_paths([f"ckpt_path={ckpt}", "data.source.split_seed=3"], ["ckpt_path"])
    assert with_run_data_choice(args) == [*args, "data=custom"]
    assert with_run_data_choice(args[:1]) == args[:1]  # no data setting given: the command uses the record itself
    assert with_run_data_choice(quote_paths([f"ckpt_path={tmp_path}/gone.ckpt", "data.root=x"], ["ckpt_path"]))[-1] == "data.root=x"


@pytest.mark.parametrize("command, setting", [("train", "data.root"), ("train", "data.cache_dir"),
                                              ("train", "data.source.captions"), ("eval", "data.root"),
                                              ("prepare", "data.root"), ("prepare", "cache_dir")])
def test_a_data_path_with_a_tilde_or_a_comma_reaches_the_config_as_typed(command, setting, monkeypatch):
    # README's `capgen-train data=custom data.root=~/pets`: unquoted, `~` stops Hydra's lexer and
    # a comma would make a sweep; the code expands `~` itself.
    from capgen.config.command_line import command_line

    from helpers.runs import compose_command

    monkeypatch.setenv("CAPGEN_LAUNCH_TIME", "0")  # restored after the test: command_line("train") sets it
    extra = ["cache_dir=/tmp/c"] if command == "prepare" and setting != "cache_dir" else []
    args = command_line(command, ["data=custom", f"{setting}=~/my pets,2", *extra])
    assert OmegaConf.select(compose_command(command, *args), setting) == "~/my pets,2"


def test_the_readmes_own_data_command_reads_the_data_it_describes(tmp_path, monkeypatch):
    """README's "Your own data" command, copied as a shell splits it, on the layout it describes:
    images in data.root and a captions.jsonl without a split column."""
    import json
    import shlex

    from capgen.config.command_line import command_line
    from capgen.instantiate import instantiate

    from helpers.fixtures_real import write_jpeg
    from helpers.paths import REPO

    line = next(x for x in (REPO / "README.md").read_text().splitlines() if x.startswith("capgen-train data=custom"))
    args = [f"data.root={tmp_path}" if a.startswith("data.root=") else a for a in shlex.split(line)[1:]]
    rows = [{"file": write_jpeg(tmp_path / f"pet{k}.jpg", seed=k).name, "caption": f"a pet number {k}"} for k in range(20)]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("CAPGEN_LAUNCH_TIME", "0")  # restored after the test: command_line("train") sets it
    cfg = compose_command("train", *command_line("train", args))
    data = instantiate(cfg.data)
    sizes = {split: len(data.source_factory(split=split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 16, "val": 2, "test": 2}  # drawn by the fractions the command gives


@pytest.mark.parametrize("command, args", [("eval", ["ckpt_path=x.ckpt"]), ("caption", ["ckpt_path=x.ckpt", "images=x.jpg"])])
@pytest.mark.parametrize("config_name, says", [("train", "a capgen-train run"), ("eval", "capgen-eval wrote it")])
def test_eval_and_caption_refuse_a_folder_holding_a_run_before_hydra_writes(tmp_path, command, args, config_name, says):
    from capgen.config.command_line import command_line

    run = _run_folder(tmp_path / "run", "completed", "last.ckpt")
    (run / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    config_name: {config_name}\n")
    saved = (run / ".hydra" / "config.yaml").read_bytes()
    for given in (f"paths.output_dir={run}", f"hydra.run.dir={run}"):
        with pytest.raises(SystemExit) as err:
            command_line(command, [*args, given])
        message = str(err.value)
        assert message.startswith(f"capgen-{command}: hydra.run.dir={run} (or paths.output_dir) already holds"), message
        assert says in message and "paths.output_dir=<new folder>" in message and "\n" not in message
    assert (run / ".hydra" / "config.yaml").read_bytes() == saved
    (tmp_path / "empty").mkdir()  # a folder without a run may be given
    assert command_line(command, [*args, f"paths.output_dir={tmp_path / 'empty'}"])[-1].endswith("empty'")
