"""The facts every stage shares: the face size a model takes and the classes it answers."""

CLASS_NAMES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 48  # FER2013's faces are 48x48 gray
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)  # what every model takes: raw 0-255 gray pixels
