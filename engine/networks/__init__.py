"""Extra networks: LoRA and textual-inversion files, their prompt tags, and network hashes in infotext.

May import the engine's top-level modules and engine.models; never engine.render, engine.backends or engine.tiny,
nothing of `bot`, Discord or SQL. Imports nothing itself.
"""
