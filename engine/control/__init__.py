"""ControlNet as sd-webui-controlnet users know it: units, preprocessors, control maps, model files, infotext, and
the hook that lets units steer any diffusers pass.

May import the engine's top-level modules, engine.models and engine.networks; never engine.render, engine.backends
or engine.tiny, nothing of `bot`, Discord or SQL. Imports nothing itself.
"""
