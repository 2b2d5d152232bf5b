"""capgen-prepare's cache_dir: a folder to write the caches into, or a refusal naming it."""

import pytest

from capgen.commands.prepare import prepare

from helpers.runs import compose_command


@pytest.mark.parametrize("given, says", [
    ("cache_dir=", r"cache_dir='': no folder given; give the folder to write the caches into, e\.g\. cache_dir=/"),
    ("cache_dir=null", r"cache_dir=null: no folder given; give the folder"),
    ("cache_dir=a_file", r"cache_dir=a_file: .*/a_file is a file, not a folder; give the folder"),
    ("cache_dir=a_file/cache", r"cache_dir=a_file/cache: the folder .*/a_file/cache cannot be created \(Not a directory\); "
                               r"give the folder .*, somewhere you can write\."),
    ("cache_dir=ro/cache", r"cache_dir=ro/cache: the folder .*/ro/cache is not writable; give the folder"),
])
def test_a_cache_dir_that_is_no_folder_to_write_in_is_refused_naming_it(read_only, tmp_path, monkeypatch, given, says):
    monkeypatch.chdir(tmp_path)  # an empty cache_dir was the current folder: the caches were written here
    (tmp_path / "a_file").write_text("")
    (read_only / "cache").mkdir()
    cfg = compose_command("prepare", given)
    with pytest.raises(ValueError, match="^" + says) as refused:
        prepare(cfg)
    assert "\n" not in str(refused.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "ro"]  # nothing written
