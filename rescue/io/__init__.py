"""Bytes in and out of disks and files: block sources and targets. No policy, no UI."""
