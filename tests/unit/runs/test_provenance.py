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
