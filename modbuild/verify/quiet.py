"""Keep third-party chatter out of the verify output: what a check prints is its own verdict.

PaddleNLP logs every save and load at INFO in colour, transformers warns about generation defaults the
checks set on purpose, and paddle warns at import about ccache. Their warnings and errors still show.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

THIRD_PARTY = r"(paddle|paddlenlp|transformers|sentence_transformers|torch|_distutils_hack|setuptools)(\.|$)"


def quiet_third_party() -> None:
    """Third-party Python warnings and progress bars off; paddlenlp's and transformers' loggers at WARNING,
    uncoloured off a TTY."""
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
