"""Official lists shipped byte for byte as package data (one subpackage per list)."""
