"""The screens of the rescue app."""
