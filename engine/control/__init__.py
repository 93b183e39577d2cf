"""ControlNet as sd-webui-controlnet users know it: units, preprocessors, control maps, model files, infotext.

May import the engine's leaves (config, errors) and diffusers/OpenCV; nothing of `bot`, Discord or SQL.
"""
