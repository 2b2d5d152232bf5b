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
