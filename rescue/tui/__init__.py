"""The Textual presenter: live sector maps, job screens and the mapfile viewer.

Only this package (and the command modules that start it) may import textual; the engine runs
the same jobs headless.
"""
