"""An interactive LMAC-ZS explorer: pick a clip, type a prompt, see and hear its map.

Usage in a notebook::

    from clapnb.explorer import explorer
    display(explorer(model, decoder, scenes, prompt="This is a sound of dog."))

**Why it is built this way.** JupyterLab 4.6 sends widget messages (a button
click) to their own kernel thread. The old explorer drew with ``plt.subplots`` and
``plt.show()`` inside ``with out:``; a second message arriving mid-click (a second
click, a redraw) made ``plt.show()`` close the figure still being drawn. Maps came
out blank or half-drawn, or as the text ``<Figure size 640x480 with 0 Axes>``, and
the complete figure landed in the log console, because ``with out:`` routes output
by the message being handled, which the other thread had changed.

So this explorer shares no state with pyplot or with the kernel's current message:

* the figure is a ``matplotlib.figure.Figure`` (:func:`clapnb.viz.explanation_figure`),
  which pyplot does not know and so cannot close, rendered here to a PNG;
* the Output widget is filled by setting its ``outputs`` in one assignment (not by
  capturing prints with ``with out:``), so nothing depends on which thread or
  message is running, and a half-built result is never shown;
* clicks are serialised: the button is disabled and a lock held while an explanation
  is computed; a click meanwhile is ignored;
* an error is shown in the Output, with its traceback, instead of the log console.

The first explanation is shown when the explorer is built, so a rendered copy of the
notebook (with widget state saved) shows a map too.
"""

from __future__ import annotations

import base64
import threading
import traceback

from clapnb import lmaczs, viz

#: shown instead of an explanation when the prompt box is empty
EMPTY_PROMPT = "Type a prompt first (for example: This is a sound of dog.), then press Explain."


def _text(text: str, name: str = "stdout") -> dict:
    return {"output_type": "stream", "name": name, "text": text}


def _display(data: dict) -> dict:
    return {"output_type": "display_data", "data": data, "metadata": {}}


def _figure_png(fig: viz.InlineFigure) -> dict:
    png = fig._repr_png_()          # the PNG IPython would show for it
    return _display({"image/png": base64.b64encode(png).decode("ascii"),
                     "text/plain": f"<explanation figure, {len(png)} bytes of PNG>"})


def _error(exc: BaseException) -> dict:
    return {"output_type": "error", "ename": type(exc).__name__, "evalue": str(exc),
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip().split("\n")}


def explanation_outputs(model, decoder, scenes, clip: int, prompt: str) -> list[dict]:
    """The Output widget's content for one clip and prompt: the table, the figure and
    players for the original, masked-in and masked-out audio (as notebook output dicts)."""
    if not prompt.strip():
        return [_text(EMPTY_PROMPT)]
    ex = lmaczs.explain(model, decoder, scenes.audio(clip), [prompt], sample_rate=scenes.sample_rate)
    table = ex.table()
    fig = viz.explanation_figure(ex, model.stft_config.hop_length)
    audio = viz.players([ex.original, ex.masked_in[0], ex.masked_out[0]], ex.sample_rate,
                        ["original", f"masked-in: {prompt}", "masked-out"])
    return [_text(f"clip {clip}: {scenes.captions[clip][0]}\n"),
            _display({"text/html": table.to_html(index=False), "text/plain": table.to_string(index=False)}),
            _figure_png(fig),
            _display({"text/html": audio.data, "text/plain": "<audio players>"})]


def explorer(model, decoder, scenes, prompt: str, clip: int = 0):
    """A clip menu, a prompt box, an Explain button and the explanation below them.

    Returns an ``ipywidgets.VBox``: ``children[0]`` is the row (clip Dropdown, prompt
    Text, Explain Button), ``children[1]`` the Output with the explanation of
    ``clip`` for ``prompt``, computed now.
    """
    import ipywidgets as widgets

    clip_box = widgets.Dropdown(options=[(f"{i}: {scenes.captions[i][0][:50]}", i) for i in range(len(scenes))],
                                value=clip, description="clip")
    text_box = widgets.Text(value=prompt, description="prompt", layout=widgets.Layout(width="28em"))
    button = widgets.Button(description="Explain", button_style="primary")
    out = widgets.Output()
    busy = threading.Lock()

    def explain_now(_=None) -> None:
        if not busy.acquire(blocking=False):
            return  # an explanation is being computed; the button is disabled meanwhile
        button.disabled = True
        try:
            clip_now, prompt_now = clip_box.value, text_box.value
            out.outputs = (_text(f"explaining clip {clip_now} for {prompt_now!r} ...\n"),)
            try:
                outputs = explanation_outputs(model, decoder, scenes, clip_now, prompt_now)
            except Exception as exc:  # noqa: BLE001 - shown to the user, not lost in the log console
                outputs = [_error(exc)]
            out.outputs = tuple(outputs)
        finally:
            button.disabled = False
            busy.release()

    button.on_click(explain_now)
    explain_now()
    return widgets.VBox([widgets.HBox([clip_box, text_box, button]), out])
