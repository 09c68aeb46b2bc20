"""Pure-Python twins of the _fastpath extensions: the executable spec."""
