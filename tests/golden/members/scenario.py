# Docstrings and return annotations are inherited by the converter ("child wins, else parent") but not
# by Python; they carry no behaviour, so the golden output checks them instead.
def run(module, model):
    cls = getattr(module, f"{model.capitalize()}Block")
    block = cls.create(2)
    block._size = 5
    return {
        "kind": cls.kind,
        "has_legacy_flag": hasattr(cls, "legacy_flag"),
        "has_legacy": hasattr(block, "legacy"),
        "size": block.size,
        "forward": block.forward([-1, 2]),
        "log": block.log_name(),
        "mixin": any(b.__name__.endswith("LoggingMixin") for b in cls.__mro__),
        "setter": type(cls.__dict__.get("size", None)).__name__,
    }
