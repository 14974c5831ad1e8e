"""rescue: disk imaging and rescue for failing disks."""

__version__ = "0.1.0"
