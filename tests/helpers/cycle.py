"""A function that reads a module constant holding the function itself."""


def handle(kind, x):
    return HANDLERS[kind](x)


def plus(x):
    return x + 1


HANDLERS = {"plus": plus, "handle": handle}
