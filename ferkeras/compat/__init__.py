"""fer's API on ferkeras' model: `from ferkeras.compat import FER, Video` for `from fer import FER, Video`.

A thin layer, matched to the PyPI `fer` package 25.10.3: FaceRecognizer finds and classifies
the faces, ferkeras.video reads and analyses the frames, ferkeras.media decodes and draws; this
module only takes fer's arguments and gives fer's answers: `[{"box": [x, y, w, h], "emotions":
{"angry": p, ..., "neutral": p}}]`, probabilities rounded to 2 places as fer rounds them, and
fer's file names under Video's outdir. The native API (ferkeras.predict) gives full precision.

Where ferkeras does otherwise, on purpose:
- The model is ferkeras' (the shipped ensemble's int8 file, ferkeras' default for photos;
  `use_tflite=False`: its Keras twin; `model="shipped"`: the reference architecture's), which
  classifies the detector's box as FER2013 frames a face (48x48 gray, flip test-time
  augmentation): `offsets`, fer's margin for its own 64x64 model, is checked and not used.
  `tfserving=True` warns and runs the local model. Extra keyword-only arguments: `model` (any
  model ferkeras takes) and `tta`.
- `FER()` finds faces with ferkeras' default detector, BlazeFace (faster, and it finds more:
  bench/detectors.py); a script that asks for fer's Haar cascade (`mtcnn=False`, or any of its
  settings: `cascade_file`, `scale_factor`, `min_face_size`, `min_neighbors`) gets it, set as
  fer sets it, and `mtcnn=True` gets MTCNN. Keyword-only `detector` names one outright.
- Boxes are lists of Python ints, faces come left to right, and gray arrays work (fer's Haar
  path gives numpy rows in the cascade's order, and fails on gray arrays).
- InvalidImage is also a FerkerasError, so the message is one line naming the input.
- Video: `output="csv"` writes `outdir/data.csv`, and to_csv writes the filename it is given
  (fer writes ./data.csv whatever it is told); the zip holds the frames this run wrote (fer
  zips every .jpg in outdir); the annotated video runs at the analysed frames' rate (real
  time), drawn by ferkeras (box, label, probability bars), with `detection_box` boxes drawn on
  the whole frame; `q` in the display window stops the analysis. `display=True` without a GUI
  (opencv-python-headless, or no $DISPLAY) warns once and goes on without showing.
  `lang`, `size_multiplier`, `batch_size`, `use_async_io` and `tempfile` are accepted and not
  used (frames are analysed as read, and every file is written under a temporary name and
  renamed anyway); `include_audio=True` warns (fer needs moviepy for it). No progress bar.

Laid out as fer lays out its own: FER in compat/fer.py (fer/fer.py), Video in compat/classes.py
(fer/classes.py), both importable from here as from fer.
"""

from ferkeras.compat.classes import Video
from ferkeras.compat.fer import FER, InvalidImage

__all__ = ["FER", "Video", "InvalidImage"]
