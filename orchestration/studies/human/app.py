"""The labelling web app of a study: FastAPI, server-rendered pages, answers in SQLite.

    python -m orchestration.studies.human serve STUDY_DIR [--port 8765]   # on 127.0.0.1

GET /?rater=ID shows the rater's next screen (or a thank-you page when all are answered);
POST /answer (form fields rater, position, item, token and one choice per question) writes
the answer and redirects (303) to the next screen; GET /img/NAME serves the study's images;
GET /api/progress?rater=ID answers {"answered", "total"}. The rater id in the URL is the only
thing stored about a person. Errors are 4xx with the reason, as HTML for a browser and JSON
otherwise; a refused answer leaves the database untouched.
"""

from __future__ import annotations

import functools
from pathlib import Path
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse

from orchestration.studies.human.create import load_study
from orchestration.studies.human.design import QUESTION_KEYS, rater_schedule, rater_seed, to_ab
from orchestration.studies.human.page import message_page, screen_page
from orchestration.studies.human.storage import DB_FILE, AnswerRejected, AnswerStore


def _error(request: Request, status: int, message: str, rater: str | None = None):
    if "text/html" in request.headers.get("accept", ""):
        link = f"/?rater={quote(rater)}" if rater else None
        return HTMLResponse(message_page("Cannot take that", message, link), status_code=status)
    return JSONResponse({"error": message}, status_code=status)


def _screen_answered(form: dict[str, str], screens: list[dict]) -> tuple[dict, dict[str, str]]:
    """The screen a posted form answers and its choices in A/B terms.

    Raises AnswerRejected for a screen that is not the rater's, ValueError for a bad choice.
    """
    position = int(form.get("position", ""))
    if not 0 <= position < len(screens) or screens[position]["item"] != form.get("item"):
        raise AnswerRejected(409, f"item {form.get('item')!r} at screen {form.get('position')!r} "
                             f"was never shown to {form.get('rater')!r}")
    screen = screens[position]
    return screen, {q: to_ab(form.get(q, ""), screen["a_side"]) for q in QUESTION_KEYS}


def make_app(study_dir: str | Path) -> FastAPI:
    """The app of one study folder (ValueError if it is not one)."""
    study_dir = Path(study_dir)
    study = load_study(study_dir)
    items = {item["id"]: item for item in study["items"]}
    pair_ids = [i["id"] for i in study["items"] if i["kind"] == "pair"]
    images = {name for item in study["items"] for name in item["images"]}
    store = AnswerStore(study_dir / DB_FILE)
    app = FastAPI(title="RG-LCD human preference study", docs_url=None, redoc_url=None)

    @functools.lru_cache(maxsize=1024)
    def schedule(rater: str) -> list[dict]:
        seed = rater_seed(study["seed"], rater)
        return rater_schedule(list(items), pair_ids, study["repeats"], seed)

    def check_rater(request: Request, rater: str | None):
        if not rater:
            return _error(request, 400, "no rater id: open the link you were given, which "
                          "ends in ?rater=YOUR_ID")
        if rater not in study["raters"]:
            return _error(request, 404, f"unknown rater {rater!r}: ask the study's owner for "
                          "your link (raters are listed when the study is created)")
        return None

    @app.get("/", response_class=HTMLResponse)
    def next_screen(request: Request, rater: str | None = None):
        if (refused := check_rater(request, rater)) is not None:
            return refused
        store.register(rater, rater_seed(study["seed"], rater))
        screens = schedule(rater)
        position = store.answered(rater)
        if position >= len(screens):
            return message_page("Thank you", f"All {len(screens)} comparisons are answered. "
                                "You can close this page.")
        screen = screens[position]
        token = store.show(rater, screen)
        return screen_page(rater, items[screen["item"]], screen, len(screens), token)

    @app.post("/answer")
    async def answer(request: Request):
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8")).items()}
        rater = form.get("rater")
        if (refused := check_rater(request, rater)) is not None:
            return refused
        try:
            screen, choices = _screen_answered(form, schedule(rater))
            store.record(rater, screen, form.get("token", ""), choices)
        except ValueError as err:  # a missing or unknown choice, a non-integer position
            return _error(request, 422, f"{err}; answer all of {list(QUESTION_KEYS)} with "
                          "left, tie or right", rater)
        except AnswerRejected as err:
            return _error(request, err.status, err.message, rater)
        return RedirectResponse(f"/?rater={quote(rater)}", status_code=303)

    @app.get("/img/{name}")
    def image(name: str):
        if name not in images:  # only the study's own files: no path is ever built from input
            return JSONResponse({"error": f"no image {name!r} in this study"}, status_code=404)
        return FileResponse(study_dir / "images" / name, media_type="image/png")

    @app.get("/api/progress")
    def progress(request: Request, rater: str | None = None):
        if (refused := check_rater(request, rater)) is not None:
            return refused
        return {"answered": store.answered(rater), "total": len(schedule(rater))}

    return app
