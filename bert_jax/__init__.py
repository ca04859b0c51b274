"""bert_jax: BERT (Devlin et al., 2018) in JAX/Flax.

Importing the package has no side effects: submodules are imported by the
caller (`from bert_jax import model`).
"""

__version__ = "0.1.0"
