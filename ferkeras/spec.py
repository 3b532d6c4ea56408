"""The facts every stage shares: the face size a model takes and the classes it answers."""

CLASS_NAMES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 48  # FER2013's faces are 48x48 gray
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)  # what every model takes: raw 0-255 gray pixels
# The names other data sets give the same expressions, read as these classes: CK+'s folders say
# anger and sadness; a common Kaggle copy of FER2013, disgusted, fearful and surprised. Other
# expressions (CK+'s contempt) are none of the seven.
CLASS_SYNONYMS: dict[str, str] = {"anger": "angry", "disgusted": "disgust", "fearful": "fear",
                                  "afraid": "fear", "happiness": "happy", "sadness": "sad",
                                  "surprised": "surprise"}


def class_of_name(name: str) -> int | None:
    """The class index a name stands for (any case, or a CLASS_SYNONYMS name); None for others."""
    text = name.strip().lower()
    text = CLASS_SYNONYMS.get(text, text)
    return CLASS_NAMES.index(text) if text in CLASS_NAMES else None
