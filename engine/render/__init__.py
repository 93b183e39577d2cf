"""Rendering: one diffusers call from a `GenerationRequest` to images with their infotext.

The pipeline and its stages (prompts, img2img, hires fix, previews, upscalers, the image classifier, start-image
checks). May import the engine's top-level modules, engine.models and engine.networks; never engine.backends or
engine.tiny, nothing of `bot`, Discord or SQL. Imports nothing itself.
"""
