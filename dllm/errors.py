"""User-facing errors: one line that names the parameter and what is allowed."""


class DllmError(ValueError):
    """Bad input from the user (a parameter, a file, a name). The CLI prints it as one line."""


def check(cond: bool, message: str) -> None:
    if not cond:
        raise DllmError(message)
