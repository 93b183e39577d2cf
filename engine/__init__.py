"""sdbot's image engine: diffusers behind an A1111-faithful request, no Discord and no SQL."""
