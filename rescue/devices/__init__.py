"""What disks exist and whether we may write to them."""
