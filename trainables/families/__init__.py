"""Built-in model families; importing this package registers them."""

from trainables.families import conv_vae  # noqa: F401
