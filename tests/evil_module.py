"""Importing this module is the attack: the tests prove msgpack-state never does."""

IMPORTED = True
