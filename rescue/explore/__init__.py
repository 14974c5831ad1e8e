"""Browse, extract and mount what an image holds, reading only through the image readers.

An image is untrusted input: every name, link target and size inside it may be hostile.
"""
