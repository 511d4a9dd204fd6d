"""doit entry point: `doit` converts every model, renders the family graph, and verifies.

The task creators live in `modbuild.tasks`; this file only wires them to this tree
(`dodo_namespace` also takes the tree's lock and turns SIGTERM into a clean stop).
"""

from pathlib import Path

from modbuild.tasks import dodo_namespace

ROOT = Path(__file__).resolve().parent

globals().update(dodo_namespace(ROOT))
