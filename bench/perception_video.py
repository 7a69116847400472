"""The video parts of bench/perception.py: detector + tracker + presence weights per sequence with video, held out
beside in-sample (bench/holdout.py), and the YOLOX input sizes (accuracy and ms per frame, in one run)."""

from __future__ import annotations

import os
import statistics

import holdout
import numpy as np
from perception import bare_detector_fps, frame_rate, trackeval_scores
from tracks_per_person import summary, tracks_of_each_person

from privacy_vision.core.detectors import DetectorError, DetectorSettings, create_detector
from privacy_vision.core.presence import load_calibration
from privacy_vision.core.tracking import BACKEND_SCORE_THRESHOLDS, TrackerSettings

VIDEO_BACKENDS = ("yolox", "tflite", "hog")  # the offline detectors; Ultralytics has no weights here
INPUT_SIZES = (416, 512, 640, 832)


def available_backends() -> list[str]:
    available = []
    for backend in VIDEO_BACKENDS:
        try:
            create_detector(DetectorSettings(backend=backend))
            available.append(backend)
        except DetectorError as error:
            print(f"  backend {backend} not available here: {error}", flush=True)
    return available


def tracks_per_person_cell(run: holdout.TrackRun, sequence: str) -> str:
    gt = np.loadtxt(holdout.MOT15 / sequence / "gt/gt.txt", delimiter=",", ndmin=2)
    people = tracks_of_each_person(gt[gt[:, 6] != 0], run.mot_rows, frame_rate(sequence))
    s = summary(people)
    return f"{s['p50']:g} / {s['p90']:g} / {s['max']}"


def video_benchmark(report: list[str], plots: dict) -> None:
    sequences = holdout.VIDEO_SEQUENCES
    all_videos = holdout.videos()
    truths = {s: holdout.annotated_boxes(s) for s in sequences}
    report.append("## 2. Detector + tracker on the two sequences with video, held out beside in-sample\n")
    report.append(
        "PETS09-S2L1 (vtest.avi, 795 frames) and TUD-Campus (71 frames) against the MOT15 ground truth. **Held out**: "
        "the tracker's thresholds (best mean of MOTA and IDF1 over a grid) and the presence curves were chosen on the "
        "*other* sequence only. **In-sample**: chosen on both (what ships). AP@0.5 and recall/precision are the "
        "detector's (nothing tuned); recall and precision at the fold's track_thresh / new_track_thresh. Count: per "
        "frame, Σ presence weights of all live tracks vs annotated people (MAE / bias); 'confirmed only' sums the "
        "weights of confirmed tracks (the gap to the count is what confirmation costs); 'old count' is one per "
        "confirmed track detected in the frame (the count before presence weights). V: tracks per annotated "
        "person, p50 / p90 / max.\n"
    )
    report.append(
        "| backend | sequence | tuned on | thresholds | AP@0.5 | recall / precision at track_thresh | recall at "
        "new_track_thresh | count MAE / bias | confirmed only: bias | old count: MAE / bias | HOTA | MOTA % | "
        "IDF1 % | V p50 / p90 / max |"
    )
    report.append("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for backend in available_backends():
        print(f"[video] {backend}: detecting, grid, leave-one-sequence-out", flush=True)
        detected = {s: holdout.detect(backend, all_videos[s].path) for s in sequences}
        detections = {s: frames for s, (frames, _) in detected.items()}
        runs, scores = holdout.grid_search(detections, backend)
        chosen = holdout.folds(runs, scores, sequences)
        for sequence in sequences:
            ap = holdout.average_precision(detections[sequence], truths[sequence])
            for fold_name in (sequence, "in-sample"):
                fold = chosen[fold_name]
                point = holdout.label(fold.point)
                run = runs[point][sequence]
                recall, precision = holdout.recall_precision_at(detections[sequence], truths[sequence], fold.point[0])
                new_recall, _ = holdout.recall_precision_at(detections[sequence], truths[sequence], fold.point[1])
                count = holdout.counts(run, fold.curves, truths[sequence])
                weights, confirmed, old = count.values()
                v = scores[point][sequence]
                tuned_on = ", ".join(fold.trained_on) + (" (held out)" if fold_name == sequence else " (in-sample)")
                report.append(
                    f"| {backend} | {sequence} | {tuned_on} | {point} | {ap:.3f} | {recall:.2f} / {precision:.2f} | "
                    f"{new_recall:.2f} | {weights['mae']:.2f} / {weights['bias']:+.2f} | {confirmed['bias']:+.2f} | "
                    f"{old['mae']:.2f} / {old['bias']:+.2f} | {v['HOTA']:.1f} | {v['MOTA']:.1f} | {v['IDF1']:.1f} | "
                    f"{tracks_per_person_cell(run, sequence)} |"
                )
                if backend == "yolox" and sequence == "PETS09-S2L1" and fold_name == sequence:
                    true = holdout.people_per_frame(truths[sequence], run.n_frames)
                    _, is_confirmed, is_detected, *_ = run.samples.T
                    plots["pets_counts"] = {
                        "ground truth": true,
                        "Σ presence weights (held out)": holdout.per_frame(
                            run, holdout.presence_weights(run, fold.curves)
                        ),
                        "confirmed tracks (old count)": holdout.per_frame(run, is_confirmed * is_detected),
                    }
        ms = statistics.median(t for _, timings in detected.values() for t in timings)
        report.append(
            f"| {backend} | (detector ms per frame, median over both videos: {ms:.1f}) | | | | | | | | | | | | |"
        )
    report.append("")


def sizes_benchmark(report: list[str], repeats: int = 3) -> None:
    """Each input size: accuracy on both videos and held-out count; then ms per frame in a bare loop, the sizes
    alternating within each repeat so that the load of the shared machine falls on all of them; one run."""
    sequences = holdout.VIDEO_SEQUENCES
    all_videos = holdout.videos()
    truths = {s: holdout.annotated_boxes(s) for s in sequences}
    track_thresh, new_track_thresh = BACKEND_SCORE_THRESHOLDS["yolox"]
    settings = TrackerSettings()
    shipped = load_calibration()["yolox"]
    report.append("## 3. YOLOX-nano input size (the detection node's `input_size`), in one run\n")
    report.append(
        f"The shipped thresholds ({track_thresh} / {new_track_thresh}) and min_hits {settings.min_hits} at every size "
        "(they were tuned at 416). Count bias per frame with presence curves fitted at that size on the other "
        "sequence (held out) and with the shipped curves (fitted at 416 on both videos: in-sample).\n"
    )
    report.append(
        "| input | sequence | AP@0.5 | recall at 0.5 / track_thresh / new_track_thresh | HOTA | MOTA % | IDF1 % | "
        "count bias, curves fitted at this size (held out) | count bias, shipped curves (in-sample) |"
    )
    report.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for size in INPUT_SIZES:
        print(f"[sizes] {size}x{size}: accuracy", flush=True)
        detections = {s: holdout.detect("yolox", all_videos[s].path, size)[0] for s in sequences}
        runs = {s: holdout.run_tracker(detections[s], all_videos[s], truths[s], settings, "yolox") for s in sequences}
        scores = trackeval_scores({"size": {s: r.mot_rows for s, r in runs.items()}}, sequences)["size"]
        for sequence in sequences:
            other = [s for s in sequences if s != sequence]
            held_out = holdout.counts(runs[sequence], holdout.fit_presence([runs[s] for s in other]), truths[sequence])
            with_shipped = holdout.counts(runs[sequence], shipped, truths[sequence])
            recalls = [
                holdout.recall_precision_at(detections[sequence], truths[sequence], t)[0]
                for t in (0.5, track_thresh, new_track_thresh)
            ]
            v = scores[sequence]
            report.append(
                f"| {size} | {sequence} | {holdout.average_precision(detections[sequence], truths[sequence]):.3f} | "
                f"{' / '.join(f'{r:.2f}' for r in recalls)} | {v['HOTA']:.1f} | {v['MOTA']:.1f} | {v['IDF1']:.1f} | "
                f"{held_out['weights, all tracks']['bias']:+.2f} | {with_shipped['weights, all tracks']['bias']:+.2f} |"
            )
    report.append(
        "\nMs per frame, bare loop (OpenCV decodes vtest.avi and the detector runs, 2 onnxruntime threads; median of "
        f"300 frames after 10 of warm-up), the sizes alternating within each of {repeats} repeats; the 1-minute load "
        "average of the 2-core machine, shared with other engineers' work, in brackets.\n"
    )
    report.append("| input | " + " | ".join(f"repeat {r}" for r in range(1, repeats + 1)) + " | median |")
    report.append("|---:|" + "---:|" * (repeats + 1))
    timings: dict[int, list[tuple[float, float]]] = {size: [] for size in INPUT_SIZES}
    for repeat in range(repeats):
        for size in INPUT_SIZES:
            _, ms = bare_detector_fps("yolox", "", size)
            timings[size].append((ms, os.getloadavg()[0]))
            print(f"[sizes] repeat {repeat + 1}, {size}: {ms:.1f} ms/frame", flush=True)
    for size, runs_ms in timings.items():
        cells = " | ".join(f"{ms:.1f} ({load:.1f})" for ms, load in runs_ms)
        report.append(f"| {size} | {cells} | {statistics.median(ms for ms, _ in runs_ms):.1f} |")
    report.append("")
