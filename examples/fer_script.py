"""A script written for the PyPI `fer` package, from its README and demo, run on ferkeras' model.

Only the import line differs from the fer original (`from fer import FER, Video`);
tests/test_compat.py checks that and runs it. Usage: python examples/fer_script.py IMAGE VIDEO
It writes output/ (the annotated video, images.zip, data.csv) and fer_output.png.
"""

import pprint
import sys

import cv2

from ferkeras.compat import FER, Video

image_file, video_filename = sys.argv[1], sys.argv[2]

# README: "The following example illustrates the ease of use of this package"
img = cv2.imread(image_file)
detector = FER()
result = detector.detect_emotions(img)
pprint.pprint(result)

# README: "Just want the top emotion? Try:"
emotion, score = detector.top_emotion(img)
print("top emotion:", emotion, score)

# README: "For recognizing facial expressions in video, the `Video` class splits video into frames."
video = Video(video_filename)
raw_data = video.analyze(detector, display=True)
df = video.to_pandas(raw_data)

# demo.py: keep the first face's emotions and plot them over the frames
df = video.get_first_face(df)
df = video.get_emotions(df)
fig = df.plot(figsize=(20, 16), fontsize=26).get_figure()
fig.savefig("fer_output.png")

print("frames:", len(df))
print("dominant emotion:", df.mean().idxmax())
