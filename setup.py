"""ferkeras: facial expression recognition on FER2013 with a compact Keras CNN, exported to TFLite."""

from setuptools import setup

setup(
    name="ferkeras",
    version="0.1.0",
    description="Train, explain and export a compact Keras CNN for facial expression recognition",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # cli/ installs as ferkeras.cli, never as a top-level module named `cli`.
    # exported/ (the shipped models) installs as ferkeras.exported: `--model shipped` and
    # `--model large` (exported/large/) need no repo.
    packages=["ferkeras", "ferkeras.data", "ferkeras.media", "ferkeras.viz", "ferkeras.report",
              "ferkeras.compat", "ferkeras.cli", "ferkeras.exported"],
    package_dir={"ferkeras": "ferkeras", "ferkeras.cli": "cli", "ferkeras.exported": "exported"},
    # media/models/: the BlazeFace detector's two LiteRT files, with their Apache-2.0 licence
    package_data={"ferkeras": ["static/*"], "ferkeras.media": ["models/*.tflite", "models/LICENSE",
                                                                "models/NOTICE.md"],
                  "ferkeras.exported": ["metadata.json", "model.keras", "*.tflite", "saved_model/*.pb",
                                        "saved_model/variables/*", "large/metadata.json",
                                        "large/model.keras", "large/*.tflite", "ensemble/metadata.json",
                                        "ensemble/model.keras", "ensemble/*.tflite"]},
    include_package_data=False,
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<4",
        "tensorboard>=2.21",
        "tf-keras-vis>=0.8.7",
        "numpy>=1.26",
        "matplotlib>=3.8",
        "scikit-learn>=1.4",
        "click>=8.1",
        "pillow>=10",
        # OpenCV 5 moved the Haar cascade face detector (and its cascade files) out of the
        # main package; `ferkeras predict` needs them, so stay on 4.x.
        "opencv-python-headless>=4.8,<5",
        "ai-edge-litert>=2.3,<3",  # runs .tflite files (tf.lite.Interpreter is deprecated)
        "mtcnn>=1.0,<2",  # --detector mtcnn: its weights ship inside its wheel, no download at run time
        "scipy>=1.11",  # the face tracker's assignment (linear_sum_assignment)
        "tqdm>=4.60",  # video progress bars
    ],
    extras_require={
        "compat": ["pandas>=2"],  # only ferkeras.compat's Video.to_pandas and friends need it
        "serve": ["fastapi>=0.110", "uvicorn>=0.30"],  # `ferkeras serve`
        # the tests run every extra; Playwright drives the system's Chromium, never its own download
        # pytest-xdist: the suite runs on every core (pyproject.toml's addopts)
        "dev": ["pytest>=8", "pytest-xdist>=3.8", "ruff>=0.6", "pandas>=2", "fastapi>=0.110", "uvicorn>=0.30",
                # starlette's TestClient takes httpx2 (httpx is deprecated there), older ones httpx
                "httpx2>=2.0", "httpx>=0.27", "playwright>=1.45"],
        "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
    },
    entry_points={"console_scripts": ["ferkeras = ferkeras.cli.main:main"]},
)
