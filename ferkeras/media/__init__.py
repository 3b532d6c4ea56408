"""Media: images and video in, faces found and cropped, drawings out. No model lives here.

images (files, arrays, bytes -> RGB), detect (face detectors behind one interface), crop (48x48
face crops, aligned by the eyes where landmarks exist), track (face ids across frames, smoothing),
video (frame sources and an atomic video sink) and draw (boxes, labels, probability bars).
"""
