"""Held-out agreement of the LRM with the expert at each checkpoint of an RG-LCD + LRM run.

    python -m orchestration.studies.lrm_agreement --run outputs/toy-rglcd [--images 96] [--seed 0]

The training metric `lrm_expert_agreement` scores each triplet before the LRM learns from it,
but on the student's current outputs, which move as the student optimises the LRM. This
script holds the triplets fixed: for the first `--images` held-out toy images (caption
combinations never seen in training), z0 = the image's VAE latent, z1 / z2 = the run's
exported LCM's 1- and 2-step samples for its caption (latents, same noise for every LRM).
The toy judge scores the decoded triplets (the expert), and every LRM state ranks the same
three pairs: the pretrained LRM (step 0), then the one in each checkpoint the run kept
(sha256-verified). Agreement = share of pairs the expert does not tie that the LRM orders
the same way. Writes <run>/lrm_agreement.json and <run>/lrm_agreement.png; prints the table.
Runs in this process on the CPU (no Ray).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from orchestration.evaluation.lrm_agreement import agreement, held_out_triplets
from rglcd.toy.paths import TOY_DATA_DIR, TOY_LRM_DIR
from trainer.run_outputs.checkpointing import verify_checkpoint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="An RG-LCD + LRM run's output folder.")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lrm-init", default=None,
                        help="The pretrained LRM folder (default: the toy LRM).")
    parser.add_argument("--data-dir", default=str(TOY_DATA_DIR))
    return parser.parse_args(argv)


def lrm_states(run: Path) -> list[tuple[int, Path | None]]:
    """(step, lrm.safetensors or None for the pretrained weights), oldest first."""
    states: list[tuple[int, Path | None]] = [(0, None)]
    for folder in sorted(p for p in run.glob("checkpoint_*") if p.is_dir()):
        manifest = verify_checkpoint(folder)  # raises on a corrupt or partial checkpoint
        weights = folder / "modules" / "lrm.safetensors"
        if not weights.is_file():
            raise ValueError(f"{folder} holds no LRM: is {run} an RG-LCD + LRM run?")
        states.append((int(manifest["step"]), weights))
    if len(states) == 1:
        raise ValueError(f"{run} has no checkpoint_* folders; run the trainer first.")
    return sorted(states, key=lambda s: s[0])


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot([r["step"] for r in rows], [r["agreement"] for r in rows], marker="o")
    ax.set_xlabel("training step (0 = pretrained LRM)")
    ax.set_ylabel("agreement with the toy judge")
    ax.set_title("LRM on fixed held-out triplets")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from trainer.lrm import LatentRewardModel  # deferred: loads transformers

    args = parse_args(argv)
    run = Path(args.run)
    init = Path(args.lrm_init or TOY_LRM_DIR)
    try:
        states = lrm_states(run)
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    latents, captions, scores = held_out_triplets(run, Path(args.data_dir), args.images,
                                                  args.seed)
    rows = []
    for step, weights in states:
        lrm = LatentRewardModel.from_pretrained(init).eval()
        if weights is not None:
            from safetensors.torch import load_file

            state = {k: v.float() for k, v in load_file(weights).items()}
            lrm.load_state_dict(state)
        rows.append({"step": step, **agreement(lrm, latents, captions, scores)})
        print(f"step {step:5d}: agreement {rows[-1]['agreement']:.3f} "
              f"over {rows[-1]['pairs']} pairs", flush=True)
    mean_scores = scores.mean(0).tolist()
    result = {"images": args.images, "seed": args.seed, "rows": rows,
              "judge_mean_real_1step_2step": [round(s, 3) for s in mean_scores]}
    (run / "lrm_agreement.json").write_text(json.dumps(result, indent=2))
    plot(rows, run / "lrm_agreement.png")
    print(f"judge means (real, 1-step, 2-step): {result['judge_mean_real_1step_2step']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
