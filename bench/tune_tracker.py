"""Tune the tracker's score thresholds and calibrate the presence weights for one detector backend, held out.

    .venv/bin/python bench/tune_tracker.py [--backend yolox|tflite|hog] [--input-size N] [--write-calibration]

The backend runs on the two MOT15 sequences with video (bench/holdout.py). Every grid point of (track_thresh,
new_track_thresh, min_hits) is scored with TrackEval on each sequence. Then, leave one sequence out: the
thresholds and the presence curves are chosen on one sequence and scored on the other (held out), and chosen on
both and scored on each (in-sample: what ships). The thresholds that ship go into BACKEND_SCORE_THRESHOLDS
(core/tracking.py) by hand; --write-calibration writes the in-sample curves into
privacy_vision/core/presence_calibration.json with the command and data that made them. The report is printed and
written to bench_out/tracker_tuning_<backend>.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import holdout

from privacy_vision.core.presence import CALIBRATION_FILE, curves_to_json
from privacy_vision.core.tracking import BACKEND_SCORE_THRESHOLDS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="yolox", choices=("yolox", "tflite", "hog"))
    parser.add_argument("--input-size", type=int, default=0, help="YOLOX input side (0 = the model's own)")
    parser.add_argument("--write-calibration", action="store_true", help="ship the in-sample presence curves")
    parser.add_argument("--out", default="bench_out")
    args = parser.parse_args()
    command = "bench/tune_tracker.py " + " ".join(sys.argv[1:])
    sequences = holdout.VIDEO_SEQUENCES
    all_videos = holdout.videos()
    print(f"[tune] detecting with {args.backend} on {', '.join(sequences)}", flush=True)
    detections = {name: holdout.detect(args.backend, all_videos[name].path, args.input_size)[0] for name in sequences}
    scores_all = np.concatenate([s for frames in detections.values() for _, s in frames])
    runs, scores = holdout.grid_search(detections, args.backend)
    chosen = holdout.folds(runs, scores, sequences)
    truths = {name: holdout.annotated_boxes(name) for name in sequences}

    lines = [
        f"# Tracker thresholds and presence weights for the {args.backend} backend\n",
        f"Command: `.venv/bin/python {command}`. {len(scores_all)} detections (score ≥ the detector's conf) on "
        f"{' and '.join(sequences)}; person score median {np.median(scores_all):.2f}, quartiles "
        f"{np.quantile(scores_all, 0.25):.2f} / {np.quantile(scores_all, 0.75):.2f}.\n",
        "## Held out beside in-sample\n",
        "Held out: thresholds (best mean of MOTA and IDF1) and presence curves chosen on the other sequence only. "
        "In-sample: chosen on both sequences (what ships). Count: per frame, Σ presence weights of all live tracks "
        "vs annotated people; 'confirmed only' sums the weights of confirmed tracks (the gap is what confirmation "
        "costs); 'old count' is one per confirmed track detected in the frame.\n",
        "| sequence | chosen on | thresholds | HOTA | MOTA % | IDF1 % | count MAE / bias | confirmed only: "
        "MAE / bias | old count: MAE / bias |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for sequence in sequences:
        for name in (sequence, "in-sample"):
            fold = chosen[name]
            v = scores[holdout.label(fold.point)][sequence]
            c = holdout.counts(runs[holdout.label(fold.point)][sequence], fold.curves, truths[sequence])
            cells = " | ".join(f"{e['mae']:.2f} / {e['bias']:+.2f}" for e in c.values())
            lines.append(
                f"| {sequence} | {', '.join(fold.trained_on)}{' (held out)' if name == sequence else ''} | "
                f"{holdout.label(fold.point)} | {v['HOTA']:.1f} | {v['MOTA']:.1f} | {v['IDF1']:.1f} | {cells} |"
            )
    shipped = chosen["in-sample"]
    lines += [
        "",
        f"In-sample choice (what ships): {holdout.label(shipped.point)}; BACKEND_SCORE_THRESHOLDS has "
        f"{BACKEND_SCORE_THRESHOLDS.get(args.backend)} and min_hits is {shipped.point[2]} in the grid's best.",
        "",
        "## Every grid point (TrackEval per sequence)\n",
        "| track_thresh / new_track_thresh / min_hits | PETS MOTA | PETS IDF1 | TUD MOTA | TUD IDF1 | mean of the four |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def four(point_label: str) -> list[float]:
        v = scores[point_label]
        return [v[s][m] for s in sequences for m in ("MOTA", "IDF1")]

    for point_label in sorted(scores, key=lambda k: -sum(four(k))):
        values = four(point_label)
        lines.append(f"| {point_label} | {' | '.join(f'{x:.1f}' for x in values)} | {np.mean(values):.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"tracker_tuning_{args.backend}.md").write_text(text)
    if args.write_calibration:
        write_calibration(args.backend, shipped, command, runs)
    return 0


def write_calibration(backend: str, fold: holdout.Fold, command: str, runs: dict) -> None:
    document = json.loads(CALIBRATION_FILE.read_text()) if CALIBRATION_FILE.is_file() else {"backends": {}}
    document["about"] = (
        "Presence-weight curves per detector backend (privacy_vision/core/presence.py). x: detection score "
        "(detected_*) or seconds since the last detection (lost); y: the share of such track frames on an annotated "
        f"person (box IoU >= {holdout.MATCH_IOU}, one track per person per frame), isotonic. Written by the command "
        "of each entry; do not edit by hand."
    )
    samples = sum(len(runs[holdout.label(fold.point)][s].samples) for s in fold.trained_on)
    document["backends"][backend] = {
        "command": f".venv/bin/python {command}",
        "date": datetime.date.today().isoformat(),
        "fitted_on": list(fold.trained_on),
        "track_frames": samples,
        "thresholds": {"track_thresh": fold.point[0], "new_track_thresh": fold.point[1], "min_hits": fold.point[2]},
        **curves_to_json(fold.curves),
    }
    text = json.dumps(document, indent=1)
    text = re.sub(r"\[\s+([^\[\]]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)  # lists on a line
    CALIBRATION_FILE.write_text(text + "\n")
    print(f"[tune] presence curves for {backend} written to {CALIBRATION_FILE}")


if __name__ == "__main__":
    sys.exit(main())
