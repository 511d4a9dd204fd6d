"""Keep third-party chatter out of what modbuild prints: what a command prints is its own.

Importing paddle warns about ccache, setuptools warns that it replaces distutils, and paddle configures the
root logger at INFO with a handler of its own (`paddle.distributed.auto_parallel.random`), so every library's
INFO record is printed: matplotlib's "generated new fontManager", the weight converter's skipped-key notes in
`doit`. Progress bars are noise in a pipe or a log. `quiet_imports` handles these for every command;
`quiet_third_party` also quiets PaddleNLP (every save and load logged at INFO, in colour) and transformers
(warnings about generation defaults the checks set on purpose), for the verify checks and `generate`.
Warnings and errors still show.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

THIRD_PARTY = r"(paddle|paddlenlp|transformers|sentence_transformers|torch|_distutils_hack|setuptools)(\.|$)"
# Said at import on every run, about nothing the user can act on.
IMPORT_WARNINGS = ("No ccache found", "Setuptools is replacing distutils")  # plain text: PYTHONWARNINGS too


def quiet_imports() -> None:
    """Call at a command's entry, before paddle is imported: its import-time warnings off, the root logger at
    WARNING with a plain handler (paddle then adds none), progress bars off when stderr is not a terminal."""
    for message in IMPORT_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    # and in the processes it starts (paddle's distributed launcher and its workers import paddle too)
    inherited = [f"ignore:{message}:UserWarning" for message in IMPORT_WARNINGS]
    current = [entry for entry in os.environ.get("PYTHONWARNINGS", "").split(",") if entry]
    os.environ["PYTHONWARNINGS"] = ",".join(dict.fromkeys(current + inherited))
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)  # a logger a command set to INFO prints through its own handler, once
        handler.setFormatter(logging.Formatter("%(levelname)s: %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.WARNING)  # also when paddle came first and set INFO
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is imported


def quiet_third_party() -> None:
    """`quiet_imports`, third-party Python warnings and progress bars off; paddlenlp's and transformers' loggers
    at WARNING, uncoloured off a TTY."""
    quiet_imports()
    os.environ["TQDM_DISABLE"] = "1"  # read when tqdm is imported: before paddlenlp and transformers
    warnings.filterwarnings("ignore", module=THIRD_PARTY)  # every category, raised from their code only
    from paddlenlp.utils.log import logger as paddlenlp_logger

    paddlenlp_logger.set_level("WARNING")
    if not sys.stderr.isatty():
        paddlenlp_logger.handler.setFormatter(logging.Formatter("[%(levelname)s] PaddleNLP: %(message)s"))
    import transformers

    transformers.logging.set_verbosity_warning()
    transformers.logging.disable_progress_bar()
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)  # "Loading SentenceTransformer model ..."
