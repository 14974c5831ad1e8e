"""File-system knowledge: partition tables, used-block maps, and which files bad ranges hit."""
