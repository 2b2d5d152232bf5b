"""The resolvers capgen's configs use (capgen.config.registry): the TensorBoard run's name."""

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from capgen.config import CONF_DIR, registry


def test_tensorboard_run_name_is_the_jobs_overrides():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["model=lstm", "model.decoder.hidden_dim=512", "ckpt_path=/x.ckpt"],
                      return_hydra_config=True)
        long = compose("train", overrides=[f"+k{i}=" + "v" * 20 for i in range(12)], return_hydra_config=True)
        paths = compose("train", overrides=["data=coco2014", "data.root=/mnt/coco"], return_hydra_config=True)
    try:
        HydraConfig.instance().set_config(cfg)
        assert registry.run_name() == "model.decoder.hidden_dim=512,model=lstm"  # ckpt_path left out
        # A path in a value: one folder, not data.root= / mnt / coco, for the run and a sweep job.
        HydraConfig.instance().set_config(paths)
        assert registry.run_name() == "data.root=_mnt_coco,data=coco2014"
        OmegaConf.set_readonly(paths.hydra, False)
        paths.hydra.job.num = 3  # as Hydra sets it for a sweep's job 3
        assert paths.hydra.sweep.subdir == "3_data.root=_mnt_coco,data=coco2014"
        HydraConfig.instance().set_config(long)
        name = registry.run_name()
        assert len(name) < 200 and name.startswith("+k0=vvvv")  # a path component must stay short
    finally:
        HydraConfig.instance().cfg = None
    assert registry.run_name() == "default"  # no command line outside a Hydra app


def test_a_source_checkouts_code_reads_the_conf_beside_it_not_an_installed_ones(tmp_path):
    """The code of one checkout imported while another is installed (PYTHONPATH, a git
    worktree) must compose its own configs: its conf/ beside capgen/, not capgen.conf."""
    import importlib.resources

    from capgen.config import registry

    code = tmp_path / "checkout" / "capgen" / "config" / "registry.py"
    code.parent.mkdir(parents=True)
    code.write_text("")
    (tmp_path / "checkout" / "conf").mkdir()
    (tmp_path / "checkout" / "conf" / "train.yaml").write_text("seed: 1\n")
    installed = str(importlib.resources.files("capgen.conf"))
    assert registry._conf_dir(str(code)) == installed  # no pyproject.toml: not a checkout
    (tmp_path / "checkout" / "pyproject.toml").write_text("")
    assert registry._conf_dir(str(code)) == str((tmp_path / "checkout" / "conf").resolve())
