"""jgi inside other frameworks (layer 8: may import every jgi layer).

- :mod:`~jgi.integrations.flower`: a Flower (flwr) federation whose server records what
  every client sends and hands it to jgi's attacks as a :class:`jgi.fl.Observation`;
  a Flower client that trains a jgi model with a jgi defense stack. Needs the optional
  extra ``flower``; importing the module without flwr works, using the Flower parts
  raises an ImportError that says what to install.

Nothing is imported here, so ``python -m jgi.integrations.flower`` runs the module once.
"""
