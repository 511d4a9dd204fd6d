class LlamaLoggingMixin:
    def log_name(self):
        return f"log:{type(self).__name__}"


class LlamaBlock:
    """A block."""

    kind = "dense"
    legacy_flag = True

    def __init__(self, size):
        self._size = size

    @property
    def size(self):
        return self._size

    @size.setter
    def size(self, value):
        self._size = value

    @staticmethod
    def act(x):
        return max(x, 0)

    @classmethod
    def create(cls, size):
        return cls(size)

    def forward(self, x) -> list:
        """Apply the block."""
        return [self.act(v) * self._size for v in x]

    def legacy(self):
        return "old"
