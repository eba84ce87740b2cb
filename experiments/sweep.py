"""``python -m experiments.sweep`` is the ``vae-jax-sweep`` command (``vae_jax/run/sweep.py``)."""
from vae_jax.run import sweep

if __name__ == "__main__":
    sweep.main()
