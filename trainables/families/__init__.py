"""Built-in model families, one module each; :mod:`trainables.registry` imports them all."""
