"""rnnjax's implementation: private. The public surface is ``rnnjax`` and its modules."""
