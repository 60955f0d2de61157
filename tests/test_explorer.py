"""clapnb.explorer without a browser: the widgets' callbacks run in-process on TinyCLAP
(offline), and the Output widget's ``outputs`` hold what a browser would draw."""

import pytest

pytest.importorskip("ipywidgets")

import clapnb  # noqa: E402
from clapnb import explorer as explorer_module  # noqa: E402
from clapnb import lmaczs  # noqa: E402
from clapnb.explorer import EMPTY_PROMPT, explorer  # noqa: E402

PROMPT = "This is a sound of dog."


@pytest.fixture(scope="module")
def world():
    model = clapnb.load_model("tiny")
    return model, lmaczs.decoder_for(model), clapnb.load_scenes(model, max_items=3)


def parts(box):
    """(clip Dropdown, prompt Text, Explain Button, Output) of an explorer."""
    clip_box, text_box, button = box.children[0].children
    return clip_box, text_box, button, box.children[1]


def mime_types(out) -> list[str]:
    return [m for o in out.outputs for m in o.get("data", {})]


def html(out) -> str:
    return "".join(o["data"]["text/html"] for o in out.outputs if "text/html" in o.get("data", {}))


def test_explorer_shows_the_first_explanation_when_built(world):
    box = explorer(*world, prompt=PROMPT, clip=1)
    clip_box, text_box, button, out = parts(box)
    assert clip_box.value == 1 and text_box.value == PROMPT and not button.disabled
    assert [label for label, _ in clip_box.options][0].startswith("0: ")
    assert "image/png" in mime_types(out)
    assert html(out).count("<audio") == 3
    assert "clip 1:" in out.outputs[0]["text"]


def test_a_click_explains_the_new_clip_and_prompt(world):
    box = explorer(*world, prompt=PROMPT)
    clip_box, text_box, button, out = parts(box)
    first_png = next(o["data"]["image/png"] for o in out.outputs if "image/png" in o.get("data", {}))
    clip_box.value, text_box.value = 2, "This is a sound of siren."
    button.click()
    png = [o["data"]["image/png"] for o in out.outputs if "image/png" in o.get("data", {})]
    assert len(png) == 1 and png[0] != first_png and len(png[0]) > 1000
    assert html(out).count("<audio") == 3 and "masked-in: This is a sound of siren." in html(out)
    assert "This is a sound of siren." in html(out)  # the table
    assert "clip 2:" in out.outputs[0]["text"]
    assert not any(o["output_type"] == "error" for o in out.outputs)


def test_an_empty_prompt_shows_a_message(world):
    box = explorer(*world, prompt=PROMPT)
    _, text_box, button, out = parts(box)
    text_box.value = "   "
    button.click()
    assert [o.get("text") for o in out.outputs] == [EMPTY_PROMPT]


def test_an_error_is_shown_in_the_output(world, monkeypatch):
    box = explorer(*world, prompt=PROMPT)
    _, _, button, out = parts(box)

    def broken(*args, **kwargs):
        raise RuntimeError("the decoder broke")

    monkeypatch.setattr(explorer_module.lmaczs, "explain", broken)
    button.click()
    (error,) = out.outputs
    assert error["output_type"] == "error" and error["ename"] == "RuntimeError"
    assert error["evalue"] == "the decoder broke" and "Traceback" in error["traceback"][0]
    assert not button.disabled  # usable again after the error


def test_a_click_while_working_is_ignored(world, monkeypatch):
    box = explorer(*world, prompt=PROMPT)
    _, _, button, out = parts(box)
    real_explain, calls = lmaczs.explain, []

    def explain_and_click_again(*args, **kwargs):
        calls.append(button.disabled)
        button.click()  # a second click arrives while the first is being computed
        return real_explain(*args, **kwargs)

    monkeypatch.setattr(explorer_module.lmaczs, "explain", explain_and_click_again)
    button.click()
    assert calls == [True]  # explained once, with the button disabled
    assert "image/png" in mime_types(out) and not button.disabled
