"""ckalab: practice labs for the Security part of the CKA exam, graded on a real cluster."""

__version__ = "0.1.0"
