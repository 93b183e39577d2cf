"""sdbot's Discord side: commands, views and services over the engine and the store."""
