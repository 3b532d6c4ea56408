"""`ferkeras predict` and `ferkeras serve`: the commands that recognise expressions in users' media."""

from __future__ import annotations

import contextlib
import sys

import click

from ferkeras.media.detect import DETECTORS
from ferkeras.media.detectors import DEFAULT_DETECTOR
from ferkeras.predict import DEFAULT_TTA
from ferkeras.runners import TTA_METHODS
from ferkeras.serve import DEFAULT_HOST, DEFAULT_PORT
from ferkeras.service import DEFAULT_MAX_LATENCY, DEFAULT_MAX_UPLOAD_MB, DEFAULT_QUEUE
from ferkeras.video import DEFAULT_SCAN_EVERY, DEFAULT_SMOOTH

from .options import quiet_tensorflow_startup, runs_dir_option


@click.command()
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option("--camera", type=int, metavar="N", help="analyse camera N (0: the first) instead of files")
@click.option("--model", help="shipped (the model installed with ferkeras), large (the large one "
              "installed beside it: more accurate, 7x the computation), ensemble (the two as one: "
              "the most accurate), a .tflite or .keras file, a SavedModel folder or a run "
              "(default: the latest run trained on real faces, else ensemble)")
@click.option("--detector", type=click.Choice(DETECTORS), default=DEFAULT_DETECTOR, show_default=True,
              help="face detector: blazeface (MediaPipe's BlazeFace: fast, finds more, aligns by the "
              "eyes), haar (OpenCV's Haar cascade, fer's) or mtcnn (aligns; slower)")
@click.option("--no-align", is_flag=True,
              help="with blazeface or mtcnn: frame the face by its landmarks without turning it "
              "(eyes not levelled)")
@click.option("--min-face", type=int, metavar="PIXELS",
              help="the smallest face to search for (blazeface's default: a tenth of the image's "
              "longer side, at least 48; smaller finds crowds of small faces, in more time)")
@click.option("--tta", type=click.Choice(tuple(TTA_METHODS)), default=DEFAULT_TTA, show_default=True,
              help="test-time augmentation of each face: none, flip (its mirror too), shifts (10 views)")
@click.option("--json", "as_json", is_flag=True, help="print JSON (images: a list; video: JSON lines, "
              "one record per face per frame)")
@click.option("--annotate", metavar="OUT", type=click.Path(),
              help="draw boxes and labels: OUT.jpg or a folder (images), OUT.mp4 (video)")
@click.option("--csv", "csv_path", metavar="FILE", type=click.Path(dir_okay=False),
              help="video: one row per face per frame (frame, time, track, box, label, probabilities)")
@click.option("--every", type=int, metavar="N", help="video: analyse every Nth frame")
@click.option("--fps", type=float, metavar="F", help="video: analyse about F frames per second")
@click.option("--max-frames", type=int, metavar="N", help="video: stop after N analysed frames")
@click.option("--smooth", type=float, default=DEFAULT_SMOOTH, show_default=True, metavar="A",
              help="video: moving average of each face's probabilities, new = A x frame + (1 - A) x "
              "old (1: none)")
@click.option("--scan-every", type=int, default=DEFAULT_SCAN_EVERY, show_default=True, metavar="N",
              help="video: search the whole frame for new faces every N analysed frames, and near "
              "the tracked faces in between (1: the whole frame every time; faces under a tenth of "
              "it, every 10 frames)")
@click.option("--no-detect", is_flag=True, help="images: classify each whole image as one face crop")
@click.option("--no-reframe", is_flag=True, help="48x48 face crops: read each as it is only, not also "
              "as its landmarks frame it (found by --detector; the two views' answers averaged)")
@click.option("--no-light", is_flag=True, help="read each face crop as it is lit, not with a crop "
              "darker, brighter or flatter than any training face brought to the edge of their range")
@click.option("--no-sharpen", is_flag=True, help="read each face crop as sharp as it is, not with a crop "
              "blurrier than any training face sharpened to the edge of their sharpness")
@runs_dir_option
def predict(inputs: tuple[str, ...], camera: int | None, model: str | None, detector: str, no_align: bool,
            min_face: int | None, tta: str, as_json: bool, annotate: str | None, csv_path: str | None,
            every: int | None, fps: float | None, max_frames: int | None, smooth: float, scan_every: int,
            no_detect: bool, no_reframe: bool, no_light: bool, no_sharpen: bool, runs_dir: str) -> None:
    """Label the expression of each face in photos, folders, a video, a stream URL or a camera."""
    from ferkeras import predict as prediction
    from ferkeras import video
    from ferkeras.media.frames import VideoSource, video_source
    from ferkeras.runners import needs_tensorflow

    source = video_source(inputs, camera)
    if source is None and not inputs:
        raise click.UsageError("give images, folders, a video or a stream URL, or --camera N")
    # A bad video, camera or flag fails here, before a model loads and before any output.
    opened = VideoSource(source, every, fps, max_frames) if source is not None else None
    with opened or contextlib.nullcontext() as clip:
        if needs_tensorflow(model, runs_dir) or detector == "mtcnn":
            with quiet_tensorflow_startup():
                import tensorflow  # noqa: F401
        recognizer = prediction.FaceRecognizer(model, detector, align=not no_align, tta=tta,
                                               runs_dir=runs_dir, reframe=not no_reframe, light=not no_light,
                                               sharpen=not no_sharpen, min_face=min_face)
        if clip is None:
            results = prediction.predict(inputs, recognizer, runs_dir, detect=False if no_detect else None,
                                         annotate=annotate)
            click.echo(prediction.to_json(results) if as_json else prediction.format_table(results))
            click.echo(recognizer.runner.describe(), err=True)
            return
        summary = video.predict_video(clip, recognizer, smooth=smooth, scan_every=scan_every,
                                      csv_path=csv_path, json_out=sys.stdout if as_json else None,
                                      annotate=annotate,
                                      progress=sys.stderr.isatty())
    # The model's line comes with the results, so a bad input's error stays the only line.
    click.echo(recognizer.runner.describe(), err=True)
    click.echo(summary.format(), err=as_json)


@click.command()
@click.option("--model", help="shipped, large, ensemble, a .tflite or .keras file, a SavedModel "
              "folder or a run (default: the latest run trained on real faces, else ensemble)")
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="address to listen on (0.0.0.0: every network this machine is on)")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help="port to listen on")
@click.option("--detector", type=click.Choice(DETECTORS), default=DEFAULT_DETECTOR, show_default=True,
              help="face detector")
@click.option("--min-face", type=int, metavar="PIXELS",
              help="the smallest face to search for (as predict's --min-face)")
@click.option("--tta", type=click.Choice(tuple(TTA_METHODS)), default=DEFAULT_TTA, show_default=True,
              help="test-time augmentation of each face")
@click.option("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, show_default=True,
              help="largest image accepted; larger uploads get 413")
@click.option("--workers", type=click.IntRange(min=1), help="inference threads, each with its own "
              "model interpreter and detector (default: one per core)")
@click.option("--queue", type=click.IntRange(min=0), default=DEFAULT_QUEUE, show_default=True,
              help="requests waiting for a worker at most; more get 503 with Retry-After")
@click.option("--max-latency", type=click.FloatRange(min=0), default=DEFAULT_MAX_LATENCY, show_default=True,
              help="seconds: a request expected to take longer (its wait for a worker, then its own "
              "time) gets 503 at once; 0: only --queue bounds the wait")
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="uvicorn processes on the one port, each with its own workers and queue "
              "(default workers: the cores shared out)")
@runs_dir_option
def serve(model: str | None, host: str, port: int, detector: str, min_face: int | None, tta: str,
          max_upload_mb: float, workers: int | None, queue: int, max_latency: float, processes: int,
          runs_dir: str) -> None:
    """Serve a JSON API (/api/predict) and a live webcam page (/) on FastAPI and uvicorn."""
    from ferkeras import serve as serving
    from ferkeras.runners import needs_tensorflow

    if needs_tensorflow(model, runs_dir) or detector == "mtcnn":
        with quiet_tensorflow_startup():
            import tensorflow  # noqa: F401
    settings = serving.ServeSettings(model=model, detector=detector, min_face=min_face, tta=tta,
                                     max_upload_mb=max_upload_mb, runs_dir=runs_dir, workers=workers,
                                     queue=queue, max_latency=max_latency)
    serving.serve(settings, host=host, port=port, echo=click.echo, processes=processes)
