"""What a checkpoint was trained on, and the note it gives for a photograph."""



def test_what_a_checkpoint_was_trained_on_decides_the_photograph_note():
    from capgen.runs.provenance import trained_on

    shapes = trained_on({"training_data": {"data": "shapes"}, "epoch": 7, "global_step": 20000})
    assert shapes.describe() == "shapes, 8 epochs" and "synthetic shapes data" in shapes.photo_note("a.ckpt")
    brief = trained_on({"training_data": {"data": "coco2014"}, "epoch": 0, "global_step": 40})
    assert "only 40 optimizer steps" in brief.photo_note("b.ckpt")
    assert trained_on({"training_data": {"data": "coco2014"}, "epoch": 29, "global_step": 300000}).photo_note("c") is None
    older = trained_on({"epoch": 1, "global_step": 5000}, run_data="shapes")  # no record: its run folder's data config
    assert older.synthetic and older.describe() == "shapes, 2 epochs"


def test_a_checkpoint_records_the_image_size_it_was_trained_at_and_an_earlier_ones_does_not():
    from capgen.runs.provenance import record, trained_on

    entry = record("shapes", "capgen.data.shapes.ShapesSource", 64)
    assert entry == {"data": "shapes", "source": "capgen.data.shapes.ShapesSource", "image_size": 64}
    assert trained_on({"training_data": entry}).image_size == 64
    assert trained_on({"training_data": {"data": "shapes"}}).image_size is None  # an earlier capgen's
    assert trained_on({"training_data": {"data": "shapes", "image_size": "big"}}).image_size is None  # altered by hand
    assert "image_size" not in record("coco_pt", "capgen.data.coco_pt.CocoPtSource", None)  # the config does not say


def test_a_checkpoint_records_its_resolved_data_config_with_absolute_paths_and_what_decides_its_splits(tmp_path, monkeypatch):
    """capgen-eval scores a checkpoint copied out of its run on these (capgen.commands.eval.data)."""
    from capgen.runs.provenance import record, trained_on

    monkeypatch.chdir(tmp_path)
    fractions = {"train": 0.6, "val": 0.2, "test": 0.2}
    config = {"root": "pets", "cache_dir": None, "batch_size": 8,
              "source": {"_target_": "capgen.data.custom.CustomSource", "captions": "captions.csv",
                         "split_fractions": fractions}}  # split_seed left out: its default, 0
    entry = record("custom", "capgen.data.custom.CustomSource", 32, config)
    assert entry["config"]["root"] == str(tmp_path / "pets") and config["root"] == "pets"  # a copy, made absolute
    assert entry["config"]["source"]["captions"] == "captions.csv"  # relative to the root, as read
    assert entry["splits_by"] == {"source.split_fractions": fractions, "source.split_seed": 0}
    trained = trained_on({"training_data": entry})
    assert trained.config == entry["config"] and trained.splits_by == entry["splits_by"]
    # Sources whose files give each image its split have no such setting; an earlier capgen's record, nothing.
    assert record("shapes", "s", 96, {"source": {"_target_": "capgen.data.shapes.ShapesSource"}})["splits_by"] == {}
    assert trained_on({"training_data": {"data": "custom"}}).config is None
