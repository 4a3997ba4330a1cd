"""``vpr-ros train``: train an encoder's head on the user's own recordings (see trainer.py)."""
