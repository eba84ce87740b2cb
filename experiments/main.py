"""``python -m experiments.main`` is the ``vae-jax`` command (``vae_jax/cli.py``)."""
from vae_jax import cli

if __name__ == "__main__":
    cli.main()
