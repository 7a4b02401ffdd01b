"""Trained controller policies shipped with keras-lopt.

Installed as `keras_lopt.saved_policies`; each policy is a folder holding a
controller SavedModel and its metadata file.
"""
