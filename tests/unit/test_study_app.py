"""The study's web app (orchestration/studies/human/app.py) through FastAPI's TestClient, on a real
SQLite file: the answer flow, resuming, and every kind of bad input leaving the DB as it was."""

import re
import sqlite3

import pytest
from fastapi.testclient import TestClient

from orchestration.studies.human.app import make_app
from orchestration.studies.human.create import create_study
from orchestration.studies.human.storage import DB_FILE
from tests.helpers.study import write_tiny_eval

ANSWER = {"preference": "left", "visual": "tie", "alignment": "right"}


@pytest.fixture()
def study_dir(tmp_path):
    eval_dir = write_tiny_eval(tmp_path / "eval", prompts=4)
    create_study(eval_dir, tmp_path / "study", [("good@2", "poor@4")], ["r1", "r2"],
                 repeats=1, attention=1)
    return tmp_path / "study"


def _screen(client, rater="r1") -> dict:
    page = client.get("/", params={"rater": rater})
    assert page.status_code == 200
    fields = dict(re.findall(r"name='(\w+)' value='([^']*)'", page.text))
    return {k: fields[k] for k in ("rater", "position", "item", "token")} | {"page": page.text}


def _post(client, screen, **choices):
    body = {k: v for k, v in screen.items() if k != "page"} | ANSWER | choices
    return client.post("/answer", data=body, follow_redirects=False)


def _rows(study_dir) -> list[tuple]:
    with sqlite3.connect(study_dir / DB_FILE) as db:
        return db.execute("SELECT rater, position, item, preference, visual, alignment "
                          "FROM answers ORDER BY rater, position").fetchall()


def test_answer_flow_resume_and_done(study_dir):
    client = TestClient(make_app(study_dir))
    total = client.get("/api/progress", params={"rater": "r1"}).json()["total"]
    assert total == 4 + 1 + 1  # 4 comparisons, 1 attention check, 1 repeat
    first = _screen(client)
    assert "1 / 6" in first["page"] and "Q1 General preference" in first["page"]
    assert re.search(r"src='/img/(\w+\.png)'", first["page"])
    response = _post(client, first)
    assert response.status_code == 303 and response.headers["location"] == "/?rater=r1"
    assert len(_rows(study_dir)) == 1
    restarted = TestClient(make_app(study_dir))  # a new server on the same folder resumes
    second = _screen(restarted)
    assert second["position"] == "1" and "2 / 6" in second["page"]
    assert _screen(restarted)["token"] == second["token"]  # a reload shows the same screen
    for _ in range(total - 1):
        assert _post(restarted, _screen(restarted)).status_code == 303
    assert "All 6 comparisons are answered" in restarted.get("/?rater=r1").text
    assert len(_rows(study_dir)) == total
    assert restarted.get("/api/progress?rater=r2").json() == {"answered": 0, "total": total}


def test_bad_input_is_refused_and_changes_nothing(study_dir):
    client = TestClient(make_app(study_dir))
    screen = _screen(client)
    assert _post(client, screen).status_code == 303
    before = _rows(study_dir)
    double = _post(client, screen)  # the same form again: double submit / replay
    assert double.status_code == 409 and "already answered" in double.json()["error"]
    nxt = _screen(client)
    forged_item = _post(client, nxt | {"item": "c999"})
    assert forged_item.status_code == 409 and "never shown" in forged_item.json()["error"]
    ahead = _post(client, nxt | {"position": str(int(nxt["position"]) + 1)})
    assert ahead.status_code == 409
    wrong_token = _post(client, nxt | {"token": "0" * 32})
    assert wrong_token.status_code == 409 and "token" in wrong_token.json()["error"]
    other = _post(client, nxt | {"rater": "r2"})  # r1's screen answered as r2
    assert other.status_code == 409
    bad_choice = _post(client, nxt, visual="both")
    assert bad_choice.status_code == 422 and "left, tie or right" in bad_choice.json()["error"]
    no_choice = client.post("/answer", data={k: nxt[k] for k in ("rater", "position", "item",
                                                                  "token")})
    assert no_choice.status_code == 422
    assert _rows(study_dir) == before


def test_unknown_rater_and_images(study_dir):
    client = TestClient(make_app(study_dir))
    unknown = client.get("/?rater=mallory", headers={"accept": "text/html"})
    assert unknown.status_code == 404 and "unknown rater" in unknown.text
    assert client.get("/").status_code == 400
    posted = client.post("/answer", data={"rater": "mallory", "position": "0"})
    assert posted.status_code == 404 and "unknown rater" in posted.json()["error"]
    assert client.get("/img/c000_a.png").headers["content-type"] == "image/png"
    assert client.get("/img/..%2Fstudy.json").status_code == 404
    assert client.get("/img/answers.sqlite").status_code == 404
    assert _rows(study_dir) == []


def test_missing_study_dir(tmp_path):
    with pytest.raises(ValueError, match="not a study folder"):
        make_app(tmp_path / "nowhere")
