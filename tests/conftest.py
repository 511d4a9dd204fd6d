import sys
from pathlib import Path

# Test helper modules (golden_tree) live next to the tests.
sys.path.insert(0, str(Path(__file__).parent))
