"""Bytes in and out of disks: block sources and simulated failing disks. No policy, no UI."""
