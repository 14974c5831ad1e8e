"""On-disk formats, one module each: mapfile, raw, qcow2, zstseek."""
