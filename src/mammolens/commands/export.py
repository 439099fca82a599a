"""``mammolens export``: a trained run -> a deployable ONNX / OpenVINO model folder."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from mammolens.commands._common import cli_errors, console, emit_json


class ExportFormat(StrEnum):
    onnx = "onnx"
    openvino = "openvino"


class Level(StrEnum):
    image = "image"
    breast = "breast"
    exam = "exam"


def export(
    run: Path = typer.Argument(..., help="Run folder (uses checkpoints/best.ckpt) or a .ckpt file."),
    fmt: ExportFormat = typer.Option(..., "--format", "-f", help="onnx (ONNX Runtime, Triton onnxruntime backend) or openvino (OpenVINO IR)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (a Triton model directory)."),
    operating_point: float | None = typer.Option(None, "--operating-point", help="Decision threshold on the probability to record."),
    evaluation: Path | None = typer.Option(None, "--evaluation", help="`mammolens evaluate` output: record its validation-chosen operating point."),
    level: Level = typer.Option(Level.exam, "--level", help="Level the operating point applies to."),
    int8: bool = typer.Option(False, "--int8", help="Post-training int8 quantisation (ONNX Runtime static quantisation; openvino: the same graph as IR); checked against float32 at looser tolerances. Off by default."),
    calibration: Path | None = typer.Option(None, "--calibration", help="--int8: cache folder (`mammolens preprocess` at the run's size) of calibration images; default the run's training cache."),
    calibration_size: int | None = typer.Option(None, "--calibration-size", min=1, help="--int8: calibration images (default 128)."),
    json_out: bool = typer.Option(False, "--json", help="Print the export record as JSON to stdout."),
) -> None:
    """Export a trained model for deployment: the graph, its preprocessing settings and operating point.

    The export is checked against PyTorch before it is written (scores to 1e-4,
    heatmaps to 1e-3). `mammolens predict OUT ...` and `mammolens serve --model OUT`
    load the folder; docs/deploy.md shows ONNX Runtime and Triton use.

    Example:

        mammolens export runs/attention --format onnx --out deploy/attention --evaluation evaluation/

        mammolens export runs/attention --format openvino --int8 --calibration cache/ --out deploy/attention_int8
    """
    from mammolens.predict.export import export_run

    with cli_errors():
        rec = export_run(run, fmt.value, out, operating_point=operating_point, evaluation=evaluation, level=level.value,
                         int8=int8, calibration=calibration, calibration_size=calibration_size)
    if json_out:
        emit_json(rec)
    else:
        d = rec["check"]["max_abs_diff"]
        op = rec["operating_point"]
        console.print(
            f"export: {rec['model']} -> {Path(rec['out']) / rec['file']} ({rec['format']} {rec['precision']}; max difference to PyTorch: "
            f"score {d['score']:.1e}, heatmap {d['localization_map']:.1e}; operating point "
            f"{'not recorded' if op is None else format(op['threshold'], '.4g') + ' (' + op['level'] + ')'})"
        )
