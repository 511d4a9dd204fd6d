"""A second root: it defines `rotate` too."""


def rotate(x):
    return x * 10


def shift(x):
    return x + 100


class MistralHead:
    def out(self):
        return shift(1)
