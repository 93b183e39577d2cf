"""What the command areas share, public: an area imports from here (or from `bot.options`, `bot.services`),
never another area's private `_modules`. Not an extension: it has no commands of its own."""
