"""The layering rules the code keeps, checked on its source: the package's layers import only
downwards (the library never imports the program built on it), the commands never import each
other and the command-line mains only hand over to them; data flows one way (the module and the
datamodule never read each other through the trainer), private Lightning names live in one
module, and one function loads checkpoints. Each rule's checker is shown a planted violation."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from helpers.paths import REPO

PACKAGE = REPO / "capgen"
PRIVATE_LIGHTNING = re.compile(
    r"from lightning[\w.]* import _\w+|\._(trainer|layer_sync|every_n_train_steps|last_global_step_saved|"
    r"should_save_on_train_epoch_end|save_topk_checkpoint|monitor_candidates|is_local_file_protocol)\b"
)
# The layers, lowest first: a module imports from its own layer and the ones below, never above.
# The library (capgen's top-level modules and these folders) is usable without a Trainer.
LIBRARY = ("data", "models", "metrics")
LAYERS = ("library", "runs", "lightning", "config", "commands", "cli")
# No import goes up the layers.
UPWARD_IMPORTS: set[tuple[str, str]] = set()


def sources(*parts: str) -> dict[str, str]:
    root = PACKAGE.joinpath(*parts)
    files = [root] if root.is_file() else sorted(root.rglob("*.py"))
    return {str(f.relative_to(PACKAGE)): f.read_text() for f in files}


def imported(name: str, text: str) -> set[str]:
    """The capgen modules that the source `text` of capgen/`name` imports, anywhere in it
    (imports inside functions too), as dotted paths below capgen ("runs.checkpoint")."""
    package = Path(name).parent.parts  # what a relative import starts from, for a package's __init__ too
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - (node.level - 1)])
                target = [*base, *(node.module.split(".") if node.module else [])]
                # `from .. import config`: the names may be modules themselves
                found |= {".".join([*target, a.name]) for a in node.names} if not node.module else {".".join(target)}
            elif node.module and node.module.split(".")[0] == "capgen":
                found.add(".".join(node.module.split(".")[1:]))
        elif isinstance(node, ast.Import):
            found |= {".".join(a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == "capgen"}
    return {m for m in found if m}


def layer(path: str) -> str:
    """The layer of a module, given as a path below capgen/ ("runs/lock.py") or a dotted
    module path ("runs.lock")."""
    top = re.split(r"[./]", path)[0]
    return top if top in LAYERS else "library"


def upward_imports(files: dict[str, str]) -> set[tuple[str, str]]:
    """(module, the layer it imports from) for every import from a layer above the module's own."""
    return {(name, layer(target)) for name, text in files.items() for target in imported(name, text)
            if LAYERS.index(layer(target)) > LAYERS.index(layer(name))}


def imports_of_other_commands(files: dict[str, str]) -> set[tuple[str, str]]:
    """(module of a command, another command it imports); commands/failure.py is shared by all."""
    found = set()
    for name, text in files.items():
        parts = Path(name).with_suffix("").parts
        if parts[0] != "commands" or len(parts) < 2:
            continue
        for target in imported(name, text):
            other = target.split(".")
            if other[0] == "commands" and len(other) > 1 and other[1] not in (parts[1], "failure", "__init__"):
                found.add((name, other[1]))
    return found


def cli_imports_beyond_commands(files: dict[str, str]) -> set[tuple[str, str]]:
    """(a command-line main, a module it imports that is neither a command, the Hydra side nor
    the cli's own start-up): a main parses its command line and hands over to its command."""
    return {(name, target) for name, text in files.items() if name.startswith("cli/")
            for target in imported(name, text) if target.split(".")[0] not in ("commands", "config", "cli")}


def test_each_layer_imports_only_its_own_and_the_layers_below():
    assert upward_imports(sources()) == UPWARD_IMPORTS


def test_the_library_imports_none_of_the_program():
    library = {name: text for name, text in sources().items() if layer(name) == "library"}
    assert {name.split("/")[0] for name in library} >= {*LIBRARY, "tokenizer.py", "vocab.py", "viz.py"}
    assert {target for name, text in library.items() for target in imported(name, text) if layer(target) != "library"} == set()


def test_the_commands_never_import_each_other():
    assert imports_of_other_commands(sources()) == set()


def test_the_command_line_mains_only_hand_over_to_the_commands():
    assert cli_imports_beyond_commands(sources()) == set()
    mains = {p.stem for p in (PACKAGE / "cli").glob("*.py")} - {"__init__", "allocator", "quiet"}  # process start-up
    for name, text in sources("cli").items():
        assert not {t.split(".")[1] for t in imported(name, text) if t.startswith("cli.")} & mains, name


def test_each_rule_catches_a_planted_violation():
    assert upward_imports({"data/planted.py": "from ..runs.checkpoint import read_checkpoint"}) == {("data/planted.py", "runs")}
    assert upward_imports({"vocab.py": "def f():\n    from capgen.lightning import module"}) == {("vocab.py", "lightning")}
    assert upward_imports({"runs/planted.py": "from ..commands import train"}) == {("runs/planted.py", "commands")}
    assert upward_imports({"lightning/planted.py": "from .. import config"}) == {("lightning/planted.py", "config")}
    assert imports_of_other_commands({"commands/demo/planted.py": "from ..caption import find_images"}) == {
        ("commands/demo/planted.py", "caption")}
    assert imports_of_other_commands({"commands/caption.py": "from .failure import one_paragraph_on_failure"}) == set()
    assert cli_imports_beyond_commands({"cli/planted.py": "from ..runs.lock import hold"}) == {("cli/planted.py", "runs.lock")}


def test_module_metrics_and_data_do_not_read_each_other_through_the_trainer():
    for name, text in {**sources("lightning", "module.py"), **sources("metrics")}.items():
        assert "trainer.datamodule" not in text, name
    for name, text in sources("data").items():
        assert "lightning_module" not in text and "trainer." not in text, name


def test_private_lightning_names_only_in_the_compatibility_module():
    found = {name: PRIVATE_LIGHTNING.findall(text) for name, text in sources().items() if name != "lightning/compat.py"}
    assert {name: hits for name, hits in found.items() if hits} == {}
    assert PRIVATE_LIGHTNING.search(sources("lightning", "compat.py")["lightning/compat.py"])  # the rule sees them


def test_one_function_loads_checkpoints():
    loads = {name for name, text in sources().items() if "torch.load(" in text}
    assert loads == {"runs/checkpoint.py", "data/coco_pt.py"}  # coco_pt.py reads the course's data file
    assert sources("runs", "checkpoint.py")["runs/checkpoint.py"].count("torch.load(") == 1
