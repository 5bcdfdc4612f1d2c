"""The one error a diagnosis raises: bad input, said in one line with what to pass instead."""


class DiagnosisError(ValueError):
    """The input cannot be diagnosed; the message names it and what to pass instead."""
