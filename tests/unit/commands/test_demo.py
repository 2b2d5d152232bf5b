"""capgen-demo's model side without a checkpoint or gradio: which paths ckpt_path=/run= name,
how the page's choices become DecodeSettings, and what an upload that is no picture gives."""

from __future__ import annotations

import re
import socket
import sys

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from capgen.commands.demo.app import check_address, check_demo_config, require_gradio
from capgen.commands.demo.served import FIX_UPLOAD, checkpoint_paths, page_settings, read_picture, split_paths
from capgen.config import CONF_DIR
from capgen.data.images import BadSampleError
from capgen.models.search import DecodeSettings

from helpers.fakes import tiny_vocab
from helpers.fixtures_real import make_odd_images

BEAM = DecodeSettings(method="beam", beam_size=3, length_penalty=0.7, no_repeat_ngram_size=2, min_len=1)


def test_commas_inside_a_sweeps_job_folders_stay_in_their_paths(tmp_path):
    jobs = [tmp_path / f"{i}_model.decoder.hidden_dim=40,model={m}" / "checkpoints" / "last.ckpt"
            for i, m in enumerate(["rnn", "lstm", "attn"])]
    for job in jobs:
        job.parent.mkdir(parents=True)
        job.write_bytes(b"")
    assert split_paths(",".join(map(str, jobs)), "ckpt_path") == jobs
    assert split_paths(str(jobs[1]), "ckpt_path") == [jobs[1]]


def test_a_missing_path_among_several_is_named_with_the_one_before_it(tmp_path):
    a = tmp_path / "a.ckpt"
    a.write_bytes(b"")
    with pytest.raises(FileNotFoundError) as e:
        split_paths(f"{a},{tmp_path}/gone.ckpt", "ckpt_path")
    assert str(e.value) == (f"ckpt_path={a},{tmp_path}/gone.ckpt: {tmp_path}/gone.ckpt (the part after {a}) is no file "
                            "or folder; give existing paths separated by commas, e.g. ckpt_path=a.ckpt,b.ckpt")


@pytest.mark.parametrize("given, message", [
    ({"run": None, "ckpt_path": None}, "nothing to show: give run=<run folder>"),
    ({"run": "a", "ckpt_path": "b"}, "run=a and ckpt_path=b: give one of them"),
])
def test_one_of_run_and_ckpt_path_is_needed(given, message):
    with pytest.raises(ValueError, match=message):
        checkpoint_paths(OmegaConf.create(given))


def test_a_checkpoint_given_as_run_is_pointed_to_ckpt_path(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"")
    with pytest.raises(ValueError, match=f"run={ckpt}: a file, not a run folder; give ckpt_path={ckpt}"):
        checkpoint_paths(OmegaConf.create({"run": str(ckpt), "ckpt_path": None}))
    with pytest.raises(ValueError, match="neither a capgen-train run folder nor a folder holding any"):
        checkpoint_paths(OmegaConf.create({"run": str(tmp_path), "ckpt_path": None}))


def test_page_choices_keep_the_commands_constraints_and_drop_what_the_method_does_not_read():
    beam = page_settings(BEAM, "beam", 5.0, 2, 1.0, 1.0, 0)  # a slider's 5.0 is a whole number
    assert beam == DecodeSettings(method="beam", beam_size=5, n_best=2, length_penalty=0.7, no_repeat_ngram_size=2,
                                  min_len=1)
    sample = page_settings(BEAM, "sample", 5, 3, 0.8, 0.9, 7)
    assert sample == DecodeSettings(method="sample", n_best=3, temperature=0.8, top_p=0.9, seed=7,
                                    no_repeat_ngram_size=2, min_len=1)  # no length penalty: sampling ranks nothing
    assert page_settings(BEAM, "greedy", 5, 1, 0.8, 0.9, 7) == DecodeSettings(no_repeat_ngram_size=2, min_len=1)


@pytest.mark.parametrize("choices, message", [
    (("beam", 2, 4, 1.0, 1.0, 0), r"decode.n_best=4: a beam of decode.beam_size=2 returns at most 2 captions"),
    (("greedy", 2, 3, 1.0, 1.0, 0), r"decode.n_best=3: greedy decoding gives one caption per image"),
    (("sample", 2, 1, 0.0, 1.0, 0), r"decode.temperature=0.0: give a temperature > 0"),
    (("sample", 2, 1, 1.0, 1.0, 2.5), r"decode.seed=2.5: give a whole number"),
    (("diverse_beam", 2, 1, 1.0, 1.0, 0), r"decode.method='diverse_beam': the page offers greedy, beam, sample"),
])
def test_page_choices_that_do_not_fit_are_refused_naming_the_control(choices, message):
    with pytest.raises(ValueError, match=message):
        page_settings(BEAM, *choices)


def test_an_upload_that_is_no_picture_is_named_by_its_own_name_with_the_fix(tmp_path):
    odd = make_odd_images(tmp_path / "server_side_folder")
    for kind, reason in (("text", "not an image file PIL can read"), ("empty", "empty file (0 bytes)")):
        with pytest.raises(BadSampleError) as e:
            read_picture(odd[kind])
        assert str(e.value) == f"{kind}.jpg: {reason}; {FIX_UPLOAD}"
    with pytest.raises(BadSampleError, match="no picture: nothing was uploaded; upload a picture or pick an example"):
        read_picture(None)
    assert read_picture(odd["cmyk"]).shape == (30, 40, 3)  # readable odd kinds come out as RGB


def test_a_picture_past_pils_decompression_limit_says_so(tmp_path, monkeypatch):
    path = tmp_path / "wide.png"
    Image.fromarray(np.zeros((60, 100, 3), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses more than twice this many pixels
    with pytest.raises(BadSampleError, match=r"wide.png: too large to decode safely \(Image size \(6000 pixels\) exceeds "
                                             r"limit of 2000 pixels.*; shrink it below that many pixels"):
        read_picture(path)


# ----- start-up checks (capgen.commands.demo.app) -----------------------------------------------------------
def test_a_taken_port_and_a_foreign_address_are_named_with_the_fix():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ValueError, match=rf"port={port}: 127.0.0.1:{port} cannot be served on \(Address already in "
                                             r"use: another program, perhaps another capgen-demo, listens there\); give "
                                             r"another port=, or port=null for the first free one from 7860"):
            check_address("127.0.0.1", port)
    check_address("127.0.0.1", None)  # any free port will do
    for host in ("192.0.2.1", "no-such-host.invalid"):  # an address of no machine here (TEST-NET-1), a name that resolves to none
        with pytest.raises(ValueError, match=rf"server_name={host}: not an address of this machine \(.*\); give "
                                             r"server_name=127.0.0.1 \(this machine only\)"):
            check_address(host, None)


@pytest.mark.parametrize("setting, message", [
    ("port=70000", "port=70000: give a TCP port from 1 to 65535, or port=null for the first free one from 7860"),
    ("port=abc", "port='abc': must be"),
    ("examples=0", "examples=0: give a positive whole number, e.g. examples=6"),
    ("figure_size=true", "figure_size=True: give a positive whole number, e.g. figure_size=320"),
])
def test_demo_settings_are_checked_before_anything_loads(setting, message, tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("demo", overrides=[setting, f"paths.output_dir={tmp_path}"])
    with pytest.raises(ValueError, match=re.escape(message)):
        check_demo_config(cfg)


def test_without_gradio_the_demo_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # what an import of a missing package finds
    with pytest.raises(ImportError, match=r"capgen-demo needs gradio, which is not installed here .*; install it with "
                                          r"pip install 'capgen\[demo\]'"):
        require_gradio()


def test_a_run_folder_given_as_ckpt_path_is_pointed_to_run(tmp_path):
    with pytest.raises(ValueError, match=f"ckpt_path={tmp_path}: a folder; give run={tmp_path} for a run's best checkpoint"):
        checkpoint_paths(OmegaConf.create({"run": None, "ckpt_path": str(tmp_path)}))


def test_capgen_caption_and_the_demo_mark_a_cut_caption():
    from capgen.commands.demo.page import caption_html
    from capgen.lightning.inference import caption_row
    from capgen.models.search import DecodeResult
    from capgen.vocab import CUT_MARK

    vocab = tiny_vocab()
    red, circle = vocab.stoi["red"], vocab.stoi["circle"]
    tokens = torch.tensor([[red, circle, red], [red, vocab.end_id, 0]])  # (B=2, L=3): cut, ended
    result = DecodeResult(tokens, torch.zeros(2), torch.zeros(2, 3), None)
    cut, _ = caption_row(vocab, result, 0)
    ended, _ = caption_row(vocab, result, 1)
    assert cut["cut"] is True and "cut" not in ended
    assert CUT_MARK in caption_html({**cut, "decode": "greedy"}) and CUT_MARK not in caption_html({**ended, "decode": "greedy"})
