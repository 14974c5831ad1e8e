"""Images on network shares: `ssh://`, `smb://` and `nfs://` URLs, mounted for one job.

The small API the CLI and the console use: `parse` a URL, `probe` it (does it answer, how much
room is free), and `mounted` for the length of a job; a `ShareMount` tells when its share was
lost and mounts it again.
"""
