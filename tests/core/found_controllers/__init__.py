"""A module package whose controllers are found by name, without module.controller()."""
