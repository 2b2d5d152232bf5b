"""The capgen-prepare command the datamodule's lines about caches give: the data config's name and
the data settings given, quoted for the shell, so that it can be run as shown."""

import json
import logging
import re
import shlex

import hydra
import pytest
from hydra import compose, initialize_config_dir

from capgen.commands.prepare import SPLITS, prepare
from capgen.config import CONF_DIR
from capgen.config.argv import quote_paths
from capgen.config.command_line import PATH_KEYS
from capgen.config.prepare_args import prepare_args
from capgen.data.cache import CacheDamaged, CachedImages

from helpers.fixtures_real import make_custom


def test_the_arguments_are_the_data_config_and_the_data_settings_that_make_a_cache_as_typed():
    given = ["debug=fast", "data=custom", "data.root='/data/my pets'", "data.batch_size=8", "model=lstm",
             "data.source.split_fractions={train:0.8,val:0.2}", "data.cache_dir='/scratch/c'", "data.num_workers=0",
             "+data.source.image_dir=photos", "data.min_freq=2", "data.use_features=true"]
    assert prepare_args("custom", given) == ["data=custom", "data.root=/data/my pets",
                                             "data.source.split_fractions={train:0.8,val:0.2}",
                                             "+data.source.image_dir=photos", "data.min_freq=2"]
    assert prepare_args(None, given) is None  # no data config known: the lines keep the placeholder


def _compose(args: list[str]):
    """capgen-prepare's config from its command line as a shell hands it over (paths quoted for
    Hydra as capgen-prepare's command line does)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("prepare", overrides=quote_paths(args, PATH_KEYS["prepare"]))


def test_a_stale_cache_is_told_the_capgen_prepare_command_that_rebuilds_it_which_runs_as_shown(tmp_path, caplog):
    data, cache_dir = tmp_path / "my pets", tmp_path / "the cache"
    make_custom(data)
    given = ["data=custom", f"data.root={data}", "data.source.image_dir=images", "data.num_workers=0"]
    prepare(_compose([*given, "data.source.image_size=24", f"cache_dir={cache_dir}"]))
    # Training at another image size: the caches are stale, and the line gives the command for these settings.
    now = [*given, "data.source.image_size=32", "data.batch_size=2"]
    train = _compose([*now, f"cache_dir={cache_dir}"]).data
    dm = hydra.utils.instantiate(train, cache_dir=str(cache_dir), prepare_args=prepare_args("custom", now))
    with caplog.at_level(logging.INFO, logger="capgen.data"):
        assert not isinstance(dm.source("train"), CachedImages)
    [line] = [r.getMessage() for r in caplog.records if "no usable image cache for the train split" in r.getMessage()]
    command = (f"capgen-prepare data=custom 'data.root={data}' data.source.image_dir=images "
               f"data.source.image_size=32 'cache_dir={cache_dir}'")
    assert line.endswith(f"reading the raw source; {command} writes or rebuilds it")
    assert "<this data config>" not in caplog.text

    # Run as the shell reads it, it writes the caches that training then reads.
    words = shlex.split(command)
    prepare(_compose(words[1:]))
    dm = hydra.utils.instantiate(train, cache_dir=str(cache_dir), prepare_args=prepare_args("custom", now))
    assert all(isinstance(dm.source(s), CachedImages) for s in SPLITS)


def test_a_damaged_cache_names_the_command_too(tmp_path):
    data, cache_dir = tmp_path / "data", tmp_path / "cache"
    make_custom(data)
    given = ["data=custom", f"data.root={data}", "data.source.image_dir=images", "data.source.image_size=24"]
    prepare(_compose([*given, f"cache_dir={cache_dir}"]))
    index = cache_dir / "images_val.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "edited": True}))  # its checksum no longer matches
    dm = hydra.utils.instantiate(_compose([*given, f"cache_dir={cache_dir}"]).data, cache_dir=str(cache_dir),
                                 prepare_args=prepare_args("custom", given))
    command = (f"capgen-prepare data=custom data.root={data} data.source.image_dir=images data.source.image_size=24 "
               f"cache_dir={cache_dir}")
    with pytest.raises(CacheDamaged, match=re.escape(f"Rebuild the cache with: {command} (it rewrites")):
        dm.source("val")
