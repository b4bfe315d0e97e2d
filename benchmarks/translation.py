"""Spanish factual questions answered with and without `--translate`: accuracy and latency.

Reproduces the seed project's translation benchmark on a real model (it needs one that knows
facts: `neuro model download 2b`, then `--model 2b` or a path). An answer counts as correct when
it contains one of the expected words (case and accents ignored).

    python benchmarks/translation.py --model 2b [--threads 2] [--max-tokens 48]
"""

from __future__ import annotations

import argparse
import statistics
import time
import unicodedata

from neuro_bitnet.answering import AskRequest, prepare_ask
from neuro_bitnet.backends.base import GenerationOptions
from neuro_bitnet.backends.native import NativeBackend
from neuro_bitnet.config import load_settings
from neuro_bitnet.models.manager import ModelManager

QUESTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("¿Cuál es la capital de Francia?", ("paris",)),
    ("¿Cuál es la capital de Japón?", ("tokio", "tokyo")),
    ("¿Quién escribió Don Quijote?", ("cervantes",)),
    ("¿Cuántos continentes hay en el mundo?", ("siete", "seven", "7")),
    ("¿Cuál es el planeta más grande del sistema solar?", ("jupiter",)),
    ("¿En qué año llegó el hombre a la Luna?", ("1969",)),
    ("¿Cuál es el océano más grande del mundo?", ("pacifico", "pacific")),
    ("¿Quién pintó la Mona Lisa?", ("leonardo", "vinci")),
    ("¿Cuál es el símbolo químico del oro?", ("au",)),
    ("¿Cuántos días tiene un año bisiesto?", ("366",)),
    ("¿Cuál es el río más largo de América del Sur?", ("amazonas", "amazon")),
    ("¿Qué gas respiran los seres humanos para vivir?", ("oxigeno", "oxygen")),
]


def fold(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="2b")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    path = ModelManager(load_settings()).ensure_model(args.model, assume_yes=False)
    backend = NativeBackend(path, threads=args.threads, ctx_size=2048, model_name=args.model)
    options = GenerationOptions(max_tokens=args.max_tokens, temperature=0.0)
    print(f"model: {path.name}, {len(QUESTIONS)} Spanish questions, greedy, {args.max_tokens} tokens at most\n")
    print("| mode | correct | median latency (s) |")
    print("|---|---|---|")
    for translate in (False, True):
        correct, latencies = 0, []
        for question, expected in QUESTIONS:
            start = time.perf_counter()
            prepared = prepare_ask(backend, AskRequest(question=question, translate=translate))
            answer = "".join(backend.chat(prepared.messages, options))
            latencies.append(time.perf_counter() - start)
            correct += any(word in fold(answer) for word in expected)
        mode = "--translate" if translate else "as asked"
        print(f"| {mode} | {correct}/{len(QUESTIONS)} | {statistics.median(latencies):.2f} |")


if __name__ == "__main__":
    main()
