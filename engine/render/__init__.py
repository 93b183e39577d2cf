"""Rendering: the diffusers pipeline and the image work around it."""
