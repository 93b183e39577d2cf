"""Model files: finding, hashing and loading checkpoints and VAEs (diffusers folders and single files).

May import the engine's top-level modules; never engine.render, engine.backends or engine.tiny, nothing of `bot`,
Discord or SQL. Imports nothing itself.
"""
