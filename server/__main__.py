"""`python -m colbert_onnx.server MODEL_DIR [options]`: same as `colbert-onnx serve`."""

import sys

from colbert_onnx.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
