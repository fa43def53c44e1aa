"""latentmap: explore the latent spaces of neural networks in the browser."""

__version__ = "0.1.0"
