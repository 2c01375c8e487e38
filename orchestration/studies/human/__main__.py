"""Human preference study of an evaluation's samples: create, serve, report.

    rglcd-study create --eval-dir outputs/table1/eval \
        --pairs rg-lcm-judge-lrm@2:teacher@50 rg-lcm-judge-lrm@2:lcm@4 --out outputs/study
    rglcd-study serve outputs/study [--port 8765]
    rglcd-study report outputs/study

(`rglcd-study` is `python -m orchestration.studies.human`.)

`create` draws up to --per-pair items (same prompt and seed) per pair, adds --attention
checks and --repeats repeated screens per rater; `serve` runs the labelling page on 127.0.0.1
(raters open http://127.0.0.1:PORT/?rater=ID); `report` writes report.md / .json / .png.
Departure from the paper (section 5.1): raters are whoever gets a link, not MTurk workers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestration.studies.human.create import create_study, load_study
from orchestration.studies.human.design import parse_pair
from orchestration.studies.human.report import write_report
from orchestration.studies.human.storage import DB_FILE, AnswerStore
from rglcd.toy.paths import TOY_PIPELINE_DIR


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rglcd-study",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="build a study folder from an evaluation")
    create.add_argument("--eval-dir", required=True, help="output.dir of rglcd-evaluate")
    create.add_argument("--pairs", nargs="+", required=True, help="ROW_A:ROW_B (name@steps)")
    create.add_argument("--out", required=True, help="the new study folder")
    create.add_argument("--raters", default="r1,r2,r3", help="comma-separated rater ids")
    create.add_argument("--per-pair", type=int, default=20, help="items per pair (0: all)")
    create.add_argument("--repeats", type=int, default=3, help="screens shown twice per rater")
    create.add_argument("--attention", type=int, default=2, help="attention checks")
    create.add_argument("--seed", type=int, default=0)
    create.add_argument("--lrm", help="also score the pairs with this LRM folder (column lrm), "
                        "e.g. rglcd/toy/artifacts/lrm")
    create.add_argument("--lrm-vae", default=None,
                        help="pipeline (or VAE) folder whose VAE makes the LRM's latents "
                        "(default: the toy pipeline)")
    serve = sub.add_parser("serve", help="run the labelling page on 127.0.0.1")
    serve.add_argument("study_dir")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--host", default="127.0.0.1")
    report = sub.add_parser("report", help="win rates, raters, reward-model agreement")
    report.add_argument("study_dir")
    return parser.parse_args(argv)


def _create(args: argparse.Namespace) -> None:
    lrm = None if args.lrm is None else (Path(args.lrm), args.lrm_vae or str(TOY_PIPELINE_DIR))
    path = create_study(
        Path(args.eval_dir), Path(args.out), [parse_pair(p) for p in args.pairs],
        [r.strip() for r in args.raters.split(",") if r.strip()], seed=args.seed,
        per_pair=args.per_pair or None, repeats=args.repeats, attention=args.attention, lrm=lrm,
    )
    print(f"study written to {path}; run: rglcd-study serve {path.parent}")


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from orchestration.studies.human.app import make_app  # deferred: loads fastapi

    app = make_app(args.study_dir)  # ValueError before the server starts
    print(f"study page: http://{args.host}:{args.port}/?rater=RATER_ID", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def _report(args: argparse.Namespace) -> None:
    study_dir = Path(args.study_dir)
    study = load_study(study_dir)
    answers = AnswerStore(study_dir / DB_FILE).all_answers() if (
        study_dir / DB_FILE).is_file() else []
    files = write_report(study_dir, study, answers)
    print(files["markdown"].read_text(encoding="utf-8"))
    print("outputs:", ", ".join(str(p) for p in files.values()))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        {"create": _create, "serve": _serve, "report": _report}[args.command](args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
