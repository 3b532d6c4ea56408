"""Media: images and video in, faces found and cropped, drawings out. No expression model lives here.

images (files, arrays, bytes -> RGB), faces (the Detection and Face records every stage shares,
and a face's one JSON shape), detect (face detectors behind one interface; mtcnn and blazeface
plug into it), crop (48x48 face crops, aligned by the eyes where landmarks exist), track (face
ids across frames, smoothing), frames (frame sources and an atomic video sink) and draw (boxes,
labels, probability bars).
"""
