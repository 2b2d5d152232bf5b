"""The layering rules the code keeps, checked on its source: data flows one way (the module
and the datamodule never read each other through the trainer), private Lightning names live
in one module, one function loads checkpoints, and the command-line mains never import each
other."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "capgen"
PRIVATE_LIGHTNING = re.compile(
    r"from lightning[\w.]* import _\w+|\._(trainer|layer_sync|every_n_train_steps|last_global_step_saved|"
    r"should_save_on_train_epoch_end|save_topk_checkpoint|monitor_candidates|is_local_file_protocol)\b"
)


def sources(*parts: str) -> dict[str, str]:
    root = PACKAGE.joinpath(*parts)
    files = [root] if root.is_file() else sorted(root.rglob("*.py"))
    return {str(f.relative_to(PACKAGE)): f.read_text() for f in files}


def test_module_metrics_and_data_do_not_read_each_other_through_the_trainer():
    for name, text in {**sources("training", "module.py"), **sources("metrics")}.items():
        assert "trainer.datamodule" not in text, name
    for name, text in sources("data").items():
        assert "lightning_module" not in text and "trainer." not in text, name


def test_private_lightning_names_only_in_the_compatibility_module():
    found = {name: PRIVATE_LIGHTNING.findall(text) for name, text in sources().items() if name != "training/compat.py"}
    assert {name: hits for name, hits in found.items() if hits} == {}
    assert PRIVATE_LIGHTNING.search(sources("training", "compat.py")["training/compat.py"])  # the rule sees them


def test_one_function_loads_checkpoints():
    loads = {name for name, text in sources().items() if "torch.load(" in text}
    assert loads == {"training/checkpoint.py", "data/coco_pt.py"}  # coco_pt.py reads the course's data file
    assert sources("training", "checkpoint.py")["training/checkpoint.py"].count("torch.load(") == 1


def test_command_line_mains_do_not_import_each_other():
    mains = {p.stem for p in (PACKAGE / "cli").glob("*.py")} - {"__init__", "argv", "failure"}  # argv, failure: shared helpers
    for name, text in sources("cli").items():
        imported = set(re.findall(r"from \.(\w+) import|from capgen\.cli\.(\w+) import", text))
        assert not {m for pair in imported for m in pair} & mains, name


def test_the_library_does_not_import_the_training_program():
    for folder in ("data", "models", "metrics"):
        for name, text in sources(folder).items():
            assert "training" not in re.findall(r"^from \.\.(\w+)", text, flags=re.M), name
    for name in ("tokenizer.py", "vocab.py", "viz.py"):
        assert "training" not in sources(name)[name]
