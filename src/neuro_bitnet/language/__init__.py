"""Language handling: detect the language of a question and translate with the model itself."""

from neuro_bitnet.language.detect import SUPPORTED_LANGUAGES, Detection, detect_language, language_name
from neuro_bitnet.language.translate import translate_with_backend

__all__ = ["SUPPORTED_LANGUAGES", "Detection", "detect_language", "language_name", "translate_with_backend"]
