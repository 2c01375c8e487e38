"""The study's HTML: one comparison a screen, the paper's three questions, keyboard shortcuts.

Plain server-rendered pages with a few lines of inline script (no frontend build). Keys: 1 / 2
/ 3 (or Left / Down / Right) answer the highlighted question left / tie / right and move on,
Backspace clears the last answer, Enter sends once all three are answered. The form posts to
/answer; the server writes the answer and only then redirects to the next screen.
"""

from __future__ import annotations

from html import escape

from orchestration.studies.human.design import CHOICES, QUESTIONS

SMALL_IMAGE = 128  # images narrower than this are upscaled without smoothing

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 60em; color: #222; }
.prompt { font-size: 1.3em; margin: .5em 0 1em; }
.pair { display: flex; gap: 2em; justify-content: center; }
.pair figure { margin: 0; text-align: center; }
.pair img { width: min(40vw, 360px); height: auto; border: 1px solid #999; }
.pair img.small { image-rendering: pixelated; }
.question { margin: .8em 0; padding: .5em; border-radius: 6px; }
.question.active { background: #fff4c2; }
.question label { margin-right: 1.2em; cursor: pointer; }
.progress { float: right; font-weight: bold; }
.keys { color: #666; font-size: .9em; }
button { font-size: 1.1em; padding: .4em 1.5em; }
"""

SCRIPT = """
const qs = [...document.querySelectorAll('.question')];
const form = document.getElementById('answer-form');
const send = document.getElementById('send');
function refresh() {
  const open = qs.find(q => !q.querySelector('input:checked'));
  qs.forEach(q => q.classList.toggle('active', q === open));
  send.disabled = !!open;
}
qs.forEach(q => q.addEventListener('change', refresh));
const keys = {'1': 'left', 'ArrowLeft': 'left', '2': 'tie', 'ArrowDown': 'tie',
              '3': 'right', 'ArrowRight': 'right'};
document.addEventListener('keydown', e => {
  if (keys[e.key]) {
    const open = qs.find(q => !q.querySelector('input:checked'));
    if (open) { open.querySelector(`input[value=${keys[e.key]}]`).checked = true; }
    e.preventDefault(); refresh();
  } else if (e.key === 'Backspace') {
    const done = qs.filter(q => q.querySelector('input:checked'));
    if (done.length) { done[done.length - 1].querySelector('input:checked').checked = false; }
    e.preventDefault(); refresh();
  } else if (e.key === 'Enter' && !send.disabled) {
    e.preventDefault(); form.requestSubmit();
  }
});
form.addEventListener('submit', () => { setTimeout(() => { send.disabled = true; }, 0); });
refresh();
"""


def _document(title: str, body: str, script: str = "") -> str:
    tail = f"<script>{script}</script>" if script else ""
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}"
            f"</title><style>{STYLE}</style></head><body>{body}{tail}</body></html>")


def _question(key: str, title: str, text: str) -> str:
    options = "".join(
        f"<label><input type='radio' name='{key}' value='{c}' id='{key}-{c}' required> "
        f"{'Tie' if c == 'tie' else c.capitalize()}</label>" for c in CHOICES
    )
    return (f"<fieldset class='question' id='q-{key}'><legend><b>{escape(title)}</b>: "
            f"{escape(text)}</legend>{options}</fieldset>")


def screen_page(rater: str, item: dict, screen: dict, total: int, token: str) -> str:
    """One comparison: the prompt, the two images (A on `screen['a_side']`), three questions."""
    left, right = item["images"] if screen["a_side"] == "left" else item["images"][::-1]
    small = " class='small'" if item.get("width", SMALL_IMAGE) < SMALL_IMAGE else ""
    hidden = {"rater": rater, "position": screen["position"], "item": item["id"], "token": token}
    fields = "".join(f"<input type='hidden' name='{k}' value='{escape(str(v))}'>"
                     for k, v in hidden.items())
    body = (
        f"<div class='progress' id='progress'>{screen['position'] + 1} / {total}</div>"
        f"<h1>Which image is better?</h1>"
        f"<div class='prompt'>Prompt: <q id='prompt'>{escape(item['prompt'])}</q></div>"
        f"<div class='pair'><figure><img id='left-image' src='/img/{left}'{small} alt='left'>"
        f"<figcaption>Left</figcaption></figure><figure><img id='right-image' "
        f"src='/img/{right}'{small} alt='right'><figcaption>Right</figcaption></figure></div>"
        f"<form method='post' action='/answer' id='answer-form'>{fields}"
        + "".join(_question(*q) for q in QUESTIONS)
        + "<button type='submit' id='send'>Next</button></form>"
        "<p class='keys'>Keys: 1 / &larr; left, 2 / &darr; tie, 3 / &rarr; right for the "
        "highlighted question; Backspace undoes; Enter sends.</p>"
    )
    return _document(f"Study {screen['position'] + 1} / {total}", body, SCRIPT)


def message_page(title: str, text: str, link: str | None = None) -> str:
    more = f"<p><a id='next' href='{escape(link)}'>Continue</a></p>" if link else ""
    return _document(title, f"<h1 id='title'>{escape(title)}</h1><p id='message'>"
                     f"{escape(text)}</p>{more}")
