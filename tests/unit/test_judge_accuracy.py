"""orchestration/studies/judge_accuracy.py on an evaluation folder written by the evaluation's
writers."""

from orchestration.studies.judge_accuracy import main, row_accuracy
from tests.helpers.study import write_tiny_eval


def test_both_judges_read_true_renders_and_reject_recoloured(tmp_path, capsys):
    eval_dir = write_tiny_eval(tmp_path / "eval", prompts=6)
    accuracy = row_accuracy(eval_dir)
    for judge in ("toy-judge", "heldout-judge"):
        assert accuracy["good@2"][judge] == {"colour": 1.0, "shape": 1.0, "size": 1.0, "bg": 1.0}
        assert accuracy["poor@4"][judge]["colour"] < 0.5  # the object was recoloured
    assert main([str(eval_dir), "--out", str(tmp_path / "acc.md")]) == 0
    assert "| good@2 | heldout-judge | 100.0 | 100.0 | 100.0 | 100.0 |" in capsys.readouterr().out
    assert main([str(tmp_path / "missing")]) == 2
