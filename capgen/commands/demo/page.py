"""capgen-demo's page (gradio): a picture in (upload or a shapes example), the decoding
choices, and one column per checkpoint with its caption, each word's probability, its
n-best list and, for attention models, a slider over the words showing where the model
looked, the animated GIF and every word's frame. The model calls are capgen.commands.demo.served'.

The page's one API endpoint, `/caption` (gradio_client, or POST /gradio_api/call/caption),
takes (picture, method, beam_size, n_best, temperature, top_p, seed) and returns per
checkpoint, in order: the caption as HTML, its record (JSON: caption, words, word_probs,
logprob, captions and logprobs for n-best, decode, checkpoint), the frame the slider shows,
the slider, every word's frame (a gallery) and the GIF.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import gradio as gr

from ...data.images import BadSampleError
from ...models.search.settings import BEAM_METHODS
from ...vocab import CUT_MARK, shown
from .served import EXAMPLE_PREFIX, PAGE_METHODS, Captioned, ServedModel, caption_picture, page_settings, read_picture

log = logging.getLogger(__name__)


def caption_html(row: dict) -> str:
    """The caption with each word's probability under it (a word's shade: its probability),
    then the n-best list with each caption's log-probability."""
    words = "".join(
        f'<span class="capgen-word" style="background: rgba(37, 99, 235, {0.12 + 0.6 * p:.2f})">'
        f'{html.escape(w)}<small>{p:.2f}</small></span>'
        for w, p in zip(row["words"], row["word_probs"])
    )
    caption = html.escape(row["caption"]) or "<em>(an empty caption: the model ended it at once)</em>"
    if row.get("cut"):
        caption += f" <em>{html.escape(CUT_MARK)}</em>"
    parts = [f'<p class="capgen-note">{html.escape(row[k])}</p>' for k in ("note", "figure_error") if row.get(k)]
    parts += [f'<p class="capgen-text">{caption}</p>', f'<div class="capgen-caption">{words}</div>',
             f"<p>log-probability {row['logprob']:.2f} &middot; {html.escape(row['decode'])}</p>"]
    if "captions" in row:
        cut = row.get("cut_captions", [])
        items = "".join(f"<li>{html.escape(shown(c, j in cut)) or '<em>(none)</em>'} "
                        f"<small>({'-' if lp is None else f'{lp:.2f}'})</small></li>"
                        for j, (c, lp) in enumerate(zip(row["captions"], row["logprobs"])))
        parts.append(f"<ol>{items}</ol>")
    return "\n".join(parts)


CSS = """
.capgen-path { font-family: monospace; font-size: 0.8em; overflow-wrap: anywhere; margin-top: 0; }
.capgen-text { font-size: 1.25em; font-weight: 600; }
.capgen-note { color: #b45309; font-size: 0.9em; }
.capgen-caption { line-height: 2.4em; }
.capgen-word { display: inline-flex; flex-direction: column; align-items: center; margin: 0 2px;
               padding: 0 4px; border-radius: 4px; }
.capgen-word small { font-size: 0.65em; line-height: 1.2em; }
"""


def build_page(models: list[ServedModel], examples: list[Path], out: Path, figure_size: int = 320,
               frame_ms: int = 800) -> gr.Blocks:
    """The page for `models`; figures go into `out`."""
    base = models[0].settings
    first = base.method if base.method in PAGE_METHODS else "beam"
    with gr.Blocks(title="capgen demo") as page:
        gr.Markdown("# capgen demo\nCaption a picture with each checkpoint: upload one, or pick a scene of the "
                    "built-in shapes data. Attention models show where they looked for each word.")
        outputs, states = [], []
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                picture = gr.Image(type="filepath", label="Picture", sources=["upload", "clipboard"], height=260,
                                   elem_classes="capgen-picture")
                with gr.Column(elem_classes="capgen-examples"):
                    gr.Examples([[str(p)] for p in examples], inputs=[picture], label="Shapes scenes (test split)")
                method = gr.Radio(list(PAGE_METHODS), value=first, label="Decoding (decode.method)")
                beam_size = gr.Slider(1, 10, step=1, value=max(base.beam_size, 2), label="Beam size (decode.beam_size)",
                                      visible=first in BEAM_METHODS)
                n_best = gr.Slider(1, 10, step=1, value=base.n_best, label="Captions per checkpoint (decode.n_best)",
                                   interactive=first != "greedy")
                temperature = gr.Slider(0.1, 2.0, step=0.05, value=base.temperature,
                                        label="Temperature (decode.temperature)", visible=first == "sample")
                top_p = gr.Slider(0.05, 1.0, step=0.05, value=base.top_p, label="Top-p (decode.top_p)",
                                  visible=first == "sample")
                seed = gr.Number(value=base.seed, precision=0, label="Seed (decode.seed)", visible=first == "sample")
                run = gr.Button("Caption", variant="primary")
            with gr.Column(scale=max(2, len(models))), gr.Row(equal_height=False):
                for c in models:
                    with gr.Column(min_width=300, elem_classes="capgen-column"):
                        trained = f" &middot; {html.escape(c.trained.describe())}" if c.trained else ""
                        gr.HTML(f'<h3>{html.escape(c.model)}{trained}</h3><p class="capgen-path">{html.escape(c.shown_path)}</p>')
                        text = gr.HTML(label="Caption")
                        # No labels or buttons over the pictures: they would hide the word written on each frame.
                        gr.Markdown("Where the model looked for the word the slider picks, and the animated GIF:",
                                    visible=c.has_attention)
                        with gr.Row(visible=c.has_attention):
                            frame = gr.Image(type="pil", height=280, show_label=False, buttons=[])
                            gif = gr.Image(type="filepath", height=280, show_label=False, buttons=[])
                        word = gr.Slider(0, 1, step=1, value=0, label="Word (0: the picture)", visible=c.has_attention)
                        if not c.has_attention:
                            gr.Markdown("No attention: this decoder starts from the whole picture's mean feature.")
                        with gr.Accordion("Every word", open=False, visible=c.has_attention):
                            gallery = gr.Gallery(show_label=False, columns=4, height="auto")
                        with gr.Accordion("Record (JSON)", open=False):
                            record = gr.JSON(show_label=False)
                        frames = gr.State([])
                        # .input: moves of the user only (a caption setting the slider would draw its frame twice).
                        word.input(_show_frame, inputs=[word, frames], outputs=[frame], api_visibility="private")
                    outputs += [text, record, frame, word, gallery, gif]
                    states.append(frames)

        def caption_all(upload, method, beam_size, n_best, temperature, top_p, seed):
            results = _caption_all(models, upload, (method, beam_size, n_best, temperature, top_p, seed), out,
                                   figure_size, frame_ms)
            values = []
            for result in results:
                values += _column_values(result)
            return values + [result.frames for result in results]

        # preprocess=False: the upload reaches capgen as gradio stored it, so that capgen reads it and
        # names what is wrong with a file that is no picture (gradio's own reading would answer first,
        # with PIL's bare message); the other inputs arrive as the plain values they are.
        run.click(caption_all, inputs=[picture, method, beam_size, n_best, temperature, top_p, seed],
                  outputs=outputs + states, api_name="caption", preprocess=False)
        method.change(_method_controls, inputs=[method, n_best],
                      outputs=[beam_size, n_best, temperature, top_p, seed], api_visibility="private")
    return page


def _caption_all(models: list[ServedModel], upload: dict | None, choices: tuple, out: Path, figure_size: int,
                 frame_ms: int) -> list[Captioned]:
    """Every checkpoint's caption of the uploaded picture (gradio's file record: its path on
    this machine and the name it was uploaded as); a bad picture or setting is a gr.Error,
    which the page shows as the one paragraph it is."""
    try:
        picture = read_picture(upload and upload["path"], upload and upload.get("orig_name"))
        results = []
        # The page's own examples are shapes scenes; anything else is the user's picture, most likely a photograph.
        uploaded = not Path(str(upload.get("orig_name") or upload["path"])).name.startswith(EXAMPLE_PREFIX)
        for c in models:
            settings = page_settings(c.settings, *choices)
            result = caption_picture(c, picture, settings, out, figure_size, frame_ms)
            note = c.trained.photo_note(c.model) if c.trained and uploaded else None
            if note:
                result.row["note"] = note
            results.append(result)
    except (BadSampleError, ValueError) as e:
        message = " ".join(str(e).split())
        log.warning("refused: %s", message)  # one line in the server's log, the whole paragraph on the page
        raise gr.Error(message, title="capgen-demo", print_exception=False) from None
    return results


def _column_values(result: Captioned) -> list:
    """One checkpoint's outputs: html, record, frame, slider, gallery, gif."""
    words = len(result.row["words"])
    shown = min(1, words)  # the first word's frame, or the picture when there is none
    frame = result.frames[shown] if result.frames else None
    slider = gr.Slider(0, max(words, 1), step=1, value=shown, label=f"Word (0: the picture, 1 to {words})")
    return [caption_html(result.row), result.row, frame, slider, result.frames or None,
            str(result.gif) if result.gif else None]


def _show_frame(k, frames: list):
    """The frame of word k (0: the picture) of the caption shown."""
    if not frames:
        return None
    return frames[min(max(int(k), 0), len(frames) - 1)]


def _method_controls(method: str, n_best):
    """The controls the chosen method reads (beam size; temperature, top-p, seed); greedy gives one caption."""
    sample = method == "sample"
    n_best = gr.Slider(interactive=method != "greedy", value=1 if method == "greedy" else n_best)
    return (gr.Slider(visible=method in BEAM_METHODS), n_best, gr.Slider(visible=sample), gr.Slider(visible=sample),
            gr.Number(visible=sample))

