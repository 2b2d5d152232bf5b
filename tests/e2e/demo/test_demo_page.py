"""capgen-demo as a user runs it: the page served on a free localhost port in a subprocess,
captioning through its API (gradio_client) with the tiny attention and LSTM runs side by
side (tests/conftest.py), bad uploads and a huge picture, start-up failures, and the page
itself in headless Chromium (scripts/demo_screenshot.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from hydra import compose, initialize_config_dir
from PIL import Image

from capgen.commands.caption import caption_images
from capgen.commands.demo.served import caption_picture, load_served_models, page_settings, read_picture
from capgen.config import CONF_DIR
from capgen.config.argv import quote_paths
from capgen.config.command_line import LIST_KEYS, PATH_KEYS
from capgen.data.shapes import ShapesSource
from capgen.runs.folders import best_checkpoint

from helpers import procs
from helpers.paths import REPO

pytestmark = pytest.mark.slow  # real capgen-demo servers and their trained checkpoints
SCREENSHOT = REPO / "scripts" / "demo_screenshot.py"
# The script's start_demo (capgen-demo on a free port, once its page answers) starts the tests' server too.
_spec = importlib.util.spec_from_file_location("demo_screenshot", SCREENSHOT)
screenshot = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(screenshot)
CHOICES = ("beam", 3, 1, 1.0, 1.0, 0)  # method, beam_size, n_best, temperature, top_p, seed: the page's first
PER_CHECKPOINT = 6  # html, record, frame, slider, gallery, gif (capgen.commands.demo.page)


def demo_cfg(out: Path, *args: str):
    """capgen-demo's config as its main composes it, paths quoted as its main quotes them."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("demo", overrides=[*quote_paths(list(args), PATH_KEYS["demo"], LIST_KEYS["demo"]),
                                          f"paths.output_dir={out}"])


@pytest.fixture(scope="module")
def attn_lstm(tiny_run, tiny_lstm_run) -> str:
    return f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'},{tiny_lstm_run / 'checkpoints' / 'last.ckpt'}"


@pytest.fixture(scope="module")
def server(attn_lstm, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    proc, url = screenshot.start_demo([attn_lstm, f"hydra.run.dir={out}"], out.parent / "demo.log")
    procs.adopt(proc)  # ended on SIGTERM of pytest too
    yield url, out
    procs.end(proc)


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server[0], verbose=False)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pictures") / "scene.png"
    Image.fromarray(ShapesSource("test", sizes={"test": 1}).image(0)).save(path)
    return path


def columns(result: tuple) -> list[tuple]:
    assert len(result) == 2 * PER_CHECKPOINT
    return [result[i: i + PER_CHECKPOINT] for i in range(0, len(result), PER_CHECKPOINT)]


def test_the_api_captions_with_each_checkpoint_as_capgen_caption_does(client, scene, tiny_run, tiny_lstm_run, tmp_path):
    attn, lstm = columns(client.predict(handle_file(str(scene)), *CHOICES, api_name="/caption"))
    for (html, record, *_), run in ((attn, tiny_run), (lstm, tiny_lstm_run)):
        ckpt = run / "checkpoints" / "last.ckpt"
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("caption", overrides=[f"ckpt_path={ckpt}", f"images={scene}", "figures=false",
                                                f"paths.output_dir={tmp_path / run.parent.name}"])
        [expected] = caption_images(cfg)  # capgen-caption's default decode is the page's first: beam 3
        assert record["checkpoint"] == str(ckpt) and record["decode"] == "beam 3"
        assert record["caption"] == expected["caption"] and record["words"] == expected["words"]
        assert record["word_probs"] == pytest.approx(expected["word_probs"], abs=1e-5)
        assert record["caption"] in html and f"{record['word_probs'][0]:.2f}" in html

    # The attention model's frames: the picture, then one per word, as a gallery, the slider's frame and the GIF.
    html, record, frame, slider, gallery, gif = attn
    words = len(record["words"])
    assert words > 0 and len(gallery) == words + 1
    assert slider["value"] == 1 and slider["maximum"] == words  # the slider starts on the first word
    assert Image.open(frame).size == Image.open(gallery[1]["image"]).size
    assert Image.open(gif).n_frames == words + 1
    assert lstm[2] is None and not lstm[4] and lstm[5] is None  # no attention: no frames


def test_sampling_with_n_best_gives_the_same_draws_for_the_same_seed(client, scene):
    choices = ("sample", 3, 3, 1.5, 1.0, 11)
    first = [c[1] for c in columns(client.predict(handle_file(str(scene)), *choices, api_name="/caption"))]
    again = [c[1] for c in columns(client.predict(handle_file(str(scene)), *choices, api_name="/caption"))]
    assert first == again
    for record in first:
        assert len(record["captions"]) == 3 and record["captions"][0] == record["caption"]
        assert record["decode"] == "sample, n_best 3, temperature 1.5, seed 11"


def test_an_upload_that_is_no_picture_gets_the_one_paragraph_error(client, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture\n")
    with pytest.raises(AppError) as e:
        client.predict(handle_file(str(notes)), *CHOICES, api_name="/caption")
    assert "notes.txt: not an image file PIL can read; upload a picture file (PNG, JPEG, GIF, BMP, WebP or TIFF)" \
        in str(e.value)


def test_a_choice_that_does_not_fit_gets_the_settings_error(client, scene):
    with pytest.raises(AppError) as e:
        client.predict(handle_file(str(scene)), "beam", 2, 4, 1.0, 1.0, 0, api_name="/caption")
    assert "decode.n_best=4: a beam of decode.beam_size=2 returns at most 2 captions" in str(e.value)


def test_a_6000_by_4000_photo_is_resized_and_captioned(client, scene, tmp_path):
    huge = tmp_path / "huge.jpg"
    Image.open(scene).resize((6000, 4000), Image.Resampling.BILINEAR).save(huge, quality=90)
    start = time.monotonic()
    attn, lstm = columns(client.predict(handle_file(str(huge)), *CHOICES, api_name="/caption"))
    assert time.monotonic() - start < 60
    assert attn[1]["words"] and lstm[1]["words"]
    assert Image.open(attn[5]).size[0] == 320  # the figures draw it with its longer side figure_size


# ----- the model side in-process (capgen.commands.demo.served) ------------------------------------------
def test_a_sweep_folder_and_a_moved_run_give_each_runs_best_checkpoint(tiny_run, tiny_lstm_run, scene, tmp_path):
    sweep = tmp_path / "moved" / "multirun_x"
    for i, (run, model) in enumerate(((tiny_run, "attn"), (tiny_lstm_run, "lstm"), (tiny_run, "rnn"))):
        shutil.copytree(run, sweep / f"{i}_model={model},trainer.max_epochs=1")
    (sweep / "2_model=rnn,trainer.max_epochs=1" / "summary.json").unlink()  # a job still running: left out
    models = load_served_models(demo_cfg(tmp_path / "out", f"run={sweep}"))
    assert [c.model for c in models] == ["attn", "lstm"]
    assert all(c.path.is_relative_to(sweep) and c.image_size == 96 for c in models)
    done = caption_picture(models[0], read_picture(scene), page_settings(models[0].settings, *CHOICES), tmp_path / "figs")
    assert len(done.frames) == len(done.row["words"]) + 1 and done.gif.is_file() and done.png.is_file()


def test_a_list_of_checkpoints_is_one_column_their_ensemble(tiny_run, tiny_lstm_run, scene, tmp_path):
    runs = [tiny_lstm_run, tiny_run]
    (served,) = load_served_models(demo_cfg(tmp_path / "out", f"run=[{runs[0]},{runs[1]}]"))
    assert served.model == "ensemble of lstm + attn" and served.has_attention and served.image_size == 96
    assert served.members == tuple(best_checkpoint(r) for r in runs)  # each run's best checkpoint, in order
    assert served.shown_path == " + ".join(str(p) for p in served.members)
    settings = page_settings(served.settings, "greedy", 1, 1, 1.0, 1.0, 0)
    done = caption_picture(served, read_picture(scene), settings, tmp_path / "figs")
    assert done.row["checkpoint"] == [str(p) for p in served.members]
    assert len(done.frames) == len(done.row["words"]) + 1 and done.gif.name.startswith(f"{done.gif.name[:4]}_ensemble_")
    (alone,) = load_served_models(demo_cfg(tmp_path / "out", f"ckpt_path={served.members[1]}"))
    assert caption_picture(alone, read_picture(scene), settings, tmp_path / "figs").row["logprob"] != done.row["logprob"]


def test_the_transformers_cross_attention_gives_the_per_word_view(tiny_transformer_run, scene, tmp_path):
    (served,) = load_served_models(demo_cfg(tmp_path / "out", f"run={tiny_transformer_run}"))
    assert served.has_attention
    done = caption_picture(served, read_picture(scene), page_settings(served.settings, "beam", 2, 1, 1.0, 1.0, 0),
                           tmp_path / "figs")
    assert done.row["words"] and len(done.frames) == len(done.row["words"]) + 1 and done.gif.is_file()


# ----- start-up failures, as the command prints them ----------------------------------------------
def run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return procs.run([sys.executable, "-m", "capgen.cli.demo", *args, f"hydra.run.dir={tmp_path / 'out'}"],
                     cwd=tmp_path, env=env, timeout=300)


def test_a_file_that_is_no_checkpoint_stops_the_start_with_one_paragraph(tiny_run, tmp_path):
    fake = tmp_path / "notes.ckpt"
    fake.write_text("not a checkpoint\n")
    done = run_demo(tmp_path, f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'},{fake}")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"capgen-demo: UnreadableCheckpoint: ckpt_path={fake}: not a checkpoint torch can read")
    assert last.endswith(f"(traceback in {tmp_path / 'out' / 'error.txt'})")


def test_a_port_in_use_stops_the_start_naming_the_port_and_the_fix(tiny_run, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_demo(tmp_path, f"run={tiny_run}", f"port={port}")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(
        f"capgen-demo: ValueError: port={port}: 127.0.0.1:{port} cannot be served on (Address already in use: another "
        "program, perhaps another capgen-demo, listens there); give another port=, or port=null")


def test_ctrl_c_while_serving_closes_the_page_with_one_line_and_status_130(tiny_run, tmp_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) once the page answers."""
    out = tmp_path / "out"
    proc, url = screenshot.start_demo([f"run={tiny_run}", f"hydra.run.dir={out}"], tmp_path / "demo.log")
    procs.adopt(proc)
    try:
        deadline = time.monotonic() + 60  # serving: the page is up and the command waits for Ctrl-C
        while "capgen-demo: serving at" not in (tmp_path / "demo.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        procs.end(proc)
    log = (tmp_path / "demo.log").read_text()
    assert proc.returncode == 130, log[-3000:]
    assert log.strip().splitlines()[-1] == "capgen-demo: interrupted (Ctrl-C); the page is closed."
    assert "Traceback" not in log


# ----- the page in a browser ---------------------------------------------------------------------------
BROWSER = (Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver"))


@pytest.mark.skipif(not all(p.is_file() for p in BROWSER),
                    reason="no browser to drive: /usr/bin/chromium and /usr/bin/chromedriver (Debian's chromium and "
                           "chromium-driver) are not installed, and .ci/run installs them only as root with apt-get")
def test_the_page_in_chromium_captions_an_example_and_shows_the_caption(server, client, tmp_path):
    url, out = server
    shot = tmp_path / "demo.png"
    done = procs.run([sys.executable, str(SCREENSHOT), str(shot), "--url", url], cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    page = json.loads(done.stdout.strip().splitlines()[-1])
    # What the page shows for its first example is what the API gives for that picture.
    example = out / "examples" / "shapes_test_0.png"
    expected = [c[1]["caption"] for c in columns(client.predict(handle_file(str(example)), *CHOICES, api_name="/caption"))]
    assert page["captions"] == expected
    assert all(caption in page["text"] for caption in expected)
    assert Image.open(shot).format == "PNG" and shot.stat().st_size < 200_000
